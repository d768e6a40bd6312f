"""Offline validation of Kubernetes manifests (called by scripts/validate-k8s.sh).

argv: KUBERNETES_VERSION FILE_OR_DIR...; every *.yaml document is checked, errors name the
file, the resource and the field; exit 1 on any error.
"""
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

# ServiceMonitor (monitoring.coreos.com/v1): the fields our manifest uses, with the types and
# patterns of the Prometheus Operator's CRD; anything else is refused (additionalProperties),
# so a misspelt field fails here as it would be pruned by the API server.
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {"type": "object", "required": ["key", "operator"]}},
    },
}
RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "targetLabel": {"type": "string"},
        "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep"]},
        "regex": {"type": "string"},
        "replacement": {"type": "string"},
        "separator": {"type": "string"},
    },
}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": LABEL_SELECTOR,
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array", "items": RELABEL},
                            "metricRelabelings": {"type": "array", "items": RELABEL},
                        },
                    },
                },
            },
        },
    },
}


def documents(paths):
    for p in paths:
        p = pathlib.Path(p)
        files = sorted(p.glob("*.yaml")) if p.is_dir() else [p]
        for f in files:
            with open(f) as fh:
                for i, doc in enumerate(yaml.safe_load_all(fh)):
                    if doc is not None:
                        yield f, i, doc


def main():
    version, paths = sys.argv[1], sys.argv[2:]
    errors, checked = 0, 0
    for f, i, doc in documents(paths):
        what = f"{f} (document {i}: {doc.get('kind')} {doc.get('metadata', {}).get('name', '')})"
        checked += 1
        try:
            if doc.get("kind") == "Kustomization":
                missing = [r for r in doc.get("resources", []) if not (f.parent / r).exists()]
                if missing:
                    raise ValueError(f"resources not found: {missing}")
                how = "resources exist"
            elif doc.get("apiVersion") == "monitoring.coreos.com/v1" and doc.get("kind") == "ServiceMonitor":
                jsonschema.validate(doc, SERVICE_MONITOR)
                how = "ServiceMonitor subset schema"
            else:
                kubernetes_validate.validate(doc, version, strict=True)
                how = f"Kubernetes {version} schema, strict"
            print(f"ok    {what}: {how}")
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
            field = "/".join(str(x) for x in e.path) if hasattr(e, "path") else ""
            print(f"ERROR {what}: {field or '(top)'}: {e.message}")
            errors += 1
        except Exception as e:  # no schema for the kind, unsupported version, unreadable YAML
            print(f"ERROR {what}: {type(e).__name__}: {getattr(e, 'message', e)}")
            errors += 1
    if checked == 0:
        print(f"ERROR no manifest found in {paths}")
        errors += 1
    print(f"{checked} document(s), {errors} error(s)")
    sys.exit(1 if errors else 0)


main()
