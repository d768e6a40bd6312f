//! The sections of a policy file, checked one by one against the text they came from (errors
//! name the line and the field): `Policy::parse` reads them in order.
#[allow(clippy::wildcard_imports, reason = "the raw and checked policy types of the parent")]
use super::*;

pub(super) struct Ctx<'a> {
    pub(super) origin: &'a str,
    pub(super) text: &'a str,
}

impl Ctx<'_> {
    /// `[vars.NAME]` tables: names, `roots` (path variables) and `within` (url variables).
    pub(super) fn vars(
        &self,
        raw: &BTreeMap<String, Spanned<RawVar>>,
    ) -> Result<BTreeMap<String, VarSpec>, PolicyError> {
        let mut vars = BTreeMap::new();
        for (var, spec) in raw {
            let field = format!("vars.{var}");
            if !is_valid_var_name(var) {
                let msg = format!("invalid variable name `{var}` (use letters, digits and `_`)");
                return Err(self.invalid(Some(spec.span()), field, msg));
            }
            let mut roots = Vec::new();
            let mut within = Vec::new();
            for (i, w) in spec.get_ref().within.iter().enumerate() {
                let f = format!("{field}.within[{i}]");
                if spec.get_ref().kind != VarKind::Url {
                    return Err(self.invalid(Some(w.span()), f, "`within` applies to url variables only"));
                }
                match w.get_ref().parse::<crate::grant::net::ConnectTarget>() {
                    Ok(t @ crate::grant::net::ConnectTarget::Ip { proto: crate::grant::net::Proto::Tcp, .. }) => {
                        within.push(t.to_string());
                    }
                    Ok(_) => return Err(self.invalid(Some(w.span()), f, "`within` entries are tcp:// targets")),
                    Err(e) => return Err(self.invalid(Some(w.span()), f, e.to_string())),
                }
            }
            if spec.get_ref().kind == VarKind::Url && !spec.get_ref().roots.is_empty() {
                return Err(self.invalid(Some(spec.span()), field, "`roots` applies to path variables; use `within`"));
            }
            for (i, root) in spec.get_ref().roots.iter().enumerate() {
                let r = normalize_path(Path::new(root.get_ref())).map_err(|p| {
                    self.invalid(Some(root.span()), format!("{field}.roots[{i}]"), format!("`{}`: {p}", root.get_ref()))
                })?;
                roots.push(r);
            }
            let v = spec.get_ref();
            vars.insert(var.clone(), VarSpec { kind: v.kind, roots, within, description: v.description.clone() });
        }
        Ok(vars)
    }

    /// `[[exec]]` entries: concrete paths, digests, and command-line rules checked with
    /// placeholders for their variables.
    pub(super) fn exec(&self, raw: &[RawExec], vars: &BTreeMap<String, VarSpec>) -> Result<Vec<ExecRule>, PolicyError> {
        let mut exec = Vec::new();
        for (i, e) in raw.iter().enumerate() {
            let path = e.path.get_ref();
            if path.contains('$') {
                let msg = format!("`{path}`: exec paths must name a concrete binary; variables are not allowed");
                return Err(self.invalid(Some(e.path.span()), format!("exec[{i}].path"), msg));
            }
            let path = normalize_path(Path::new(path))
                .map_err(|p| self.invalid(Some(e.path.span()), format!("exec[{i}].path"), format!("`{path}`: {p}")))?;
            let sha256 = match &e.sha256 {
                Some(d) if !is_valid_sha256(d.get_ref()) => {
                    let msg = format!("`{}` is not 64 lowercase hex digits", d.get_ref());
                    return Err(self.invalid(Some(d.span()), format!("exec[{i}].sha256"), msg));
                }
                d => d.as_ref().map(|d| d.get_ref().clone()),
            };
            let rule = ExecRule { path, sha256, args: e.args.clone(), inline_code: e.inline_code, env: e.env.clone() };
            // Patterns are checked with placeholders for their variables (values come later).
            let mut probe = rule.clone();
            if let Some(a) = &mut probe.args {
                for (j, x) in a.iter_mut().enumerate() {
                    let pieces = template_pieces(x)
                        .map_err(|m| self.invalid(Some(e.path.span()), format!("exec[{i}].args[{j}]"), m))?;
                    if let Some((_, v)) = pieces.iter().find(|(is_var, v)| *is_var && !vars.contains_key(*v)) {
                        let msg = format!("`${{{v}}}` is not declared in [vars]");
                        return Err(self.invalid(Some(e.path.span()), format!("exec[{i}].args[{j}]"), msg));
                    }
                    if pieces.iter().any(|(is_var, _)| *is_var) {
                        *x = "v".into();
                    }
                }
            }
            probe.check_cmdline().map_err(|m| self.invalid(Some(e.path.span()), format!("exec[{i}]"), m))?;
            exec.push(rule);
        }
        Ok(exec)
    }

    /// `[[read]]` / `[[write]]` (`kind`) entries: templates over declared path variables (noted
    /// in `used`), `metadata` on write rules only.
    pub(super) fn paths(
        &self,
        list: &[RawPathRule],
        kind: &str,
        vars: &BTreeMap<String, VarSpec>,
        used: &mut BTreeSet<String>,
    ) -> Result<Vec<PathRule>, PolicyError> {
        let mut out = Vec::new();
        for (i, r) in list.iter().enumerate() {
            let (t, span, field) = (r.path.get_ref(), r.path.span(), format!("{kind}[{i}].path"));
            let pieces = template_pieces(t).map_err(|m| self.invalid(Some(span.clone()), field.clone(), m))?;
            let mut placeholder = BTreeMap::new();
            for (_, var) in pieces.iter().filter(|(is_var, _)| *is_var) {
                if !vars.contains_key(*var) {
                    let msg = format!("variable `{var}` is not declared (add a [vars.{var}] table)");
                    return Err(self.invalid(Some(span), field, msg));
                }
                if vars[*var].kind != VarKind::Path {
                    let msg = format!("`{var}` is a url variable: it can fill connect targets, not paths");
                    return Err(self.invalid(Some(span), field, msg));
                }
                used.insert(var.to_string());
                placeholder.insert(*var, "/var".to_string());
            }
            // Path-kind variables are absolute, so check the shape with a stand-in value.
            let probe = substitute(t, &placeholder).unwrap_or_default();
            normalize_path(Path::new(&probe))
                .map_err(|p| self.invalid(Some(span.clone()), field, format!("`{t}`: {p}")))?;
            let metadata = r.metadata.as_ref().is_some_and(|m| *m.get_ref());
            if let Some(m) = &r.metadata
                && kind != "write"
            {
                let msg = "`metadata` applies to write rules (mode and owner changes need write access)";
                return Err(self.invalid(Some(m.span()), format!("{kind}[{i}].metadata"), msg));
            }
            out.push(PathRule { path: t.clone(), metadata });
        }
        Ok(out)
    }

    /// `[[connect]]` entries: targets, or templates over declared url variables (noted in
    /// `used`), each checked with a stand-in address.
    pub(super) fn connect(
        &self,
        raw: &[RawConnect],
        vars: &BTreeMap<String, VarSpec>,
        used: &mut BTreeSet<String>,
    ) -> Result<Vec<String>, PolicyError> {
        let mut connect = Vec::new();
        for (i, c) in raw.iter().enumerate() {
            let (t, span, field) = (c.to.get_ref(), c.to.span(), format!("connect[{i}].to"));
            let pieces = template_pieces(t).map_err(|m| self.invalid(Some(span.clone()), field.clone(), m))?;
            let mut placeholder = BTreeMap::new();
            for (_, var) in pieces.iter().filter(|(is_var, _)| *is_var) {
                match vars.get(*var) {
                    Some(VarSpec { kind: VarKind::Url, .. }) => {}
                    Some(_) => {
                        let msg = format!("`{var}` is a path variable: connect targets take url variables");
                        return Err(self.invalid(Some(span), field, msg));
                    }
                    None => {
                        let msg = format!("variable `{var}` is not declared (add a [vars.{var}] table)");
                        return Err(self.invalid(Some(span), field, msg));
                    }
                }
                used.insert(var.to_string());
                placeholder.insert(*var, "127.0.0.1:1".to_string());
            }
            // The shape is checked with a stand-in address; the template is kept as written.
            let probe = substitute(t, &placeholder).unwrap_or_default();
            let one = canonical_net(std::slice::from_ref(&probe), false)
                .map_err(|(_, m)| self.invalid(Some(span), field, m))?;
            let kept = if placeholder.is_empty() { one[0].clone() } else { t.clone() };
            push_unique(&mut connect, kept);
        }
        Ok(connect)
    }

    /// `[[listen]]` entries.
    /// `environments` / `labels`: names of 1-64 characters from a-z, 0-9, `_`, `-`, each once.
    pub(super) fn names(&self, raw: &Option<Spanned<Vec<String>>>, field: &str) -> Result<Vec<String>, PolicyError> {
        let Some(raw) = raw else { return Ok(Vec::new()) };
        let mut out: Vec<String> = Vec::new();
        for n in raw.get_ref() {
            if !is_valid_policy_name(n) {
                let msg = format!("invalid name `{n}`: use 1-64 characters from a-z, 0-9, `_`, `-`");
                return Err(self.invalid(Some(raw.span()), field.into(), msg));
            }
            if out.contains(n) {
                return Err(self.invalid(Some(raw.span()), field.into(), format!("`{n}` is named twice")));
            }
            out.push(n.clone());
        }
        Ok(out)
    }

    /// `audience`: at most 8 token audiences, each 1-255 bytes without control characters.
    pub(super) fn audience(&self, raw: &Option<Spanned<Vec<String>>>) -> Result<Vec<String>, PolicyError> {
        let Some(raw) = raw else { return Ok(Vec::new()) };
        if raw.get_ref().len() > 8 {
            return Err(self.invalid(Some(raw.span()), "audience".into(), "at most 8 audiences"));
        }
        for a in raw.get_ref() {
            if a.is_empty() || a.len() > 255 || a.chars().any(char::is_control) {
                let msg = format!("audience {a:?}: 1-255 bytes without control characters");
                return Err(self.invalid(Some(raw.span()), "audience".into(), msg));
            }
        }
        Ok(raw.get_ref().clone())
    }

    pub(super) fn listen(&self, raw: &[RawListen]) -> Result<Vec<String>, PolicyError> {
        let mut listen = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let one = canonical_net(std::slice::from_ref(l.on.get_ref()), true)
                .map_err(|(_, m)| self.invalid(Some(l.on.span()), format!("listen[{i}].on"), m))?;
            listen.extend(one.into_iter().filter(|x| !listen.contains(x)).collect::<Vec<_>>());
        }
        Ok(listen)
    }

    pub(super) fn invalid(
        &self,
        span: Option<std::ops::Range<usize>>,
        field: String,
        message: impl Into<String>,
    ) -> PolicyError {
        let line = span.map(|s| line_col(self.text, s.start).0);
        PolicyError::Invalid { origin: self.origin.to_string(), line, field, message: message.into() }
    }
}
