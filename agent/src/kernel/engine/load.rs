//! Loading the engine: a fresh load (BTF, offsets, the object's maps and programs, the backend
//! attached, pinned when asked) or the adoption of what an earlier daemon pinned.
#[allow(clippy::wildcard_imports, reason = "the engine's types and imports")]
use super::*;

/// The code-injecting variable names as the kernel compares them (`cmdline.rs`).
fn fill_env_names(ebpf: &mut Ebpf) -> Result<(), EngineError> {
    let map = ebpf.map_mut(c::MAP_ENV_NAMES).ok_or(EngineError::MissingMap { map: c::MAP_ENV_NAMES })?;
    let mut names: HashMap<&mut MapData, c::EnvKey, u32> = HashMap::try_from(map).map_err(map_err(c::MAP_ENV_NAMES))?;
    for (i, n) in c::INJECTION_ENV.iter().enumerate() {
        names.insert(c::env_pattern(n).0, 1u32 << i, 0).map_err(map_err(c::MAP_ENV_NAMES))?;
    }
    Ok(())
}

pub(super) fn links_dir(pin: &Path) -> PathBuf {
    pin.join("links")
}
pub(super) fn maps_dir(pin: &Path) -> PathBuf {
    pin.join("maps")
}
pub(super) fn progs_dir(pin: &Path) -> PathBuf {
    pin.join("progs")
}

impl Engine {
    /// Loads and attaches the programs, or adopts them from `pin_dir` when they are pinned there.
    pub fn load(opts: &EngineOptions) -> Result<Self, EngineError> {
        if let Some(pin) = &opts.pin_dir
            && links_dir(pin).join(c::PROG_FORK).exists()
        {
            return Self::adopt(pin);
        }
        Self::load_fresh(opts)
    }

    fn load_fresh(opts: &EngineOptions) -> Result<Self, EngineError> {
        let t0 = std::time::Instant::now();
        let btf = Btf::from_sys_fs()?;
        let offsets = crate::kernel::offsets::from_btf(&btf)?;
        let aya_btf = aya::Btf::from_sys_fs()?;
        let t_btf = t0.elapsed();
        let mut loader = EbpfLoader::new();
        loader.btf(Some(&aya_btf)).override_global(c::GLOBAL_OFFSETS, &offsets, true);
        let map_paths: Vec<(&str, PathBuf)> = match &opts.pin_dir {
            Some(pin) => {
                let dir = maps_dir(pin);
                std::fs::create_dir_all(&dir).map_err(|source| EngineError::Pin {
                    what: "map directory".into(),
                    path: dir.clone(),
                    source,
                })?;
                c::ALL_MAPS.iter().map(|m| (*m, dir.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &map_paths {
            // Re-uses a map already pinned there (grants survive a reload), or creates and pins it.
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT)?;
        let t_object = t0.elapsed();

        fill_env_names(&mut ebpf)?;
        crate::kernel::loader::load_argv_tail(&mut ebpf, &aya_btf)?;
        let (backend, mut links, probes) = crate::kernel::loader::attach(&mut ebpf, &aya_btf, &btf, opts)?;
        let net_cgroup = crate::kernel::loader::net_cgroup(opts)?;
        let (net_links, unix_addr) = crate::kernel::loader::attach_net(&mut ebpf, backend, &net_cgroup)?;
        links.extend(net_links);
        let t_attach = t0.elapsed();
        let dirs = opts.pin_dir.as_ref().map(|p| (progs_dir(p), links_dir(p)));
        let dirs = dirs.as_ref().map(|(a, b)| (a.as_path(), b.as_path()));
        let open_hooks = SyscallHooks::new("open", crate::kernel::loader::open_programs(backend), &mut ebpf, dirs)?;
        let guard_hooks = SyscallHooks::new("guard", crate::kernel::loader::guard_programs(backend)?, &mut ebpf, dirs)?;
        let unix_hooks =
            SyscallHooks::new("unix", crate::kernel::loader::unix_programs(backend, unix_addr), &mut ebpf, dirs)?;
        let mut kept = Vec::new();
        if let Some(pin) = &opts.pin_dir {
            let dir = links_dir(pin);
            std::fs::create_dir_all(&dir).map_err(|source| EngineError::Pin {
                what: "link directory".into(),
                path: dir.clone(),
                source,
            })?;
            // The fork link is pinned last: its presence marks a complete pinned set.
            let mut links = links;
            links.sort_by_key(|(p, _)| *p == c::PROG_FORK);
            for (prog, link) in links {
                let path = dir.join(prog);
                link.pin(&path).map_err(|source| EngineError::Pin {
                    what: format!("link {prog}"),
                    path: path.clone(),
                    source,
                })?;
            }
        } else {
            kept = links.into_iter().map(|(_, l)| l).collect();
        }
        let take = |ebpf: &mut Ebpf, name: &'static str| -> Result<Map, EngineError> {
            ebpf.take_map(name).ok_or(EngineError::MissingMap { map: name })
        };
        let maps = Maps::open(|name| take(&mut ebpf, name))?;
        let mut engine = Self {
            maps,
            unix_addr,
            ebpf: Some(ebpf),
            open_hooks,
            guard_hooks,
            unix_hooks,
            _links: kept,
            backend,
            probes,
            adopted: false,
            load_time: LoadTime::default(),
        };
        engine.refresh_conf()?;
        // Maps re-used from pins may already govern processes (a load after a partial unpin).
        engine.sync_syscall_hooks()?;
        engine.load_time =
            LoadTime { btf: t_btf, object: t_object - t_btf, attach: t_attach - t_object, total: t0.elapsed() };
        log::info!("engine loaded: {}", engine.load_time);
        Ok(engine)
    }

    /// Re-opens pinned maps; the pinned links keep the programs attached.
    fn adopt(pin: &Path) -> Result<Self, EngineError> {
        let backend = if links_dir(pin).join(c::PROG_LSM_EXEC).exists() {
            Backend::Lsm
        } else if links_dir(pin).join(c::PROG_FMOD_EXEC).exists() {
            Backend::FmodRet
        } else {
            Backend::Kill
        };
        for prog in crate::kernel::loader::backend_programs(backend) {
            let p = links_dir(pin).join(prog);
            PinnedLink::from_pin(&p).map_err(|e| EngineError::Adopt {
                path: p.clone(),
                msg: format!("pinned link {prog} is not usable: {e}"),
            })?;
        }
        let open = |name: &'static str| -> Result<Map, EngineError> {
            let p = maps_dir(pin).join(name);
            let md = MapData::from_pin(&p).map_err(map_err(name))?;
            Map::from_map_data(md).map_err(map_err(name))
        };
        let (pd, ld) = (progs_dir(pin), links_dir(pin));
        let open_hooks = SyscallHooks::adopt("open", crate::kernel::loader::open_programs(backend), &pd, &ld)?;
        let guard_hooks = SyscallHooks::adopt("guard", crate::kernel::loader::guard_programs(backend)?, &pd, &ld)?;
        let unix_addr = links_dir(pin).join(c::UNIX_ADDR_PROGS[0].0).exists();
        let unix_hooks =
            SyscallHooks::adopt("unix", crate::kernel::loader::unix_programs(backend, unix_addr), &pd, &ld)?;
        let mut engine = Self {
            maps: Maps::open(open)?,
            unix_addr,
            ebpf: None,
            open_hooks,
            guard_hooks,
            unix_hooks,
            _links: Vec::new(),
            backend,
            probes: vec![Probe { backend, result: "adopted from pinned links".into() }],
            adopted: true,
            load_time: LoadTime::default(),
        };
        // Processes may have come and gone while no daemon ran.
        engine.sync_syscall_hooks()?;
        Ok(engine)
    }
}
