#!/usr/bin/env python3
"""Static checks of the kind suite, for CI where Kubernetes cannot run.

    check_manifests.py YAML...

Every file must parse as YAML (all documents). Files under a `chaos/`
folder must be chaos-mesh objects carrying the fields chaos-mesh requires
(its CRDs' required fields and the webhook's rules for the actions used
here), with the run-time placeholder __LEADER__ replaced by a pod name
first. Exits 1 naming every problem.
"""
import sys

import yaml

MODES = {"one", "all", "fixed", "fixed-percent", "random-max-percent"}
POD_ACTIONS = {"pod-kill", "pod-failure", "container-kill"}
NET_ACTIONS = {"netem", "delay", "loss", "duplicate", "corrupt", "partition", "bandwidth"}
SELECTOR_KEYS = {
    "namespaces", "labelSelectors", "expressionSelectors", "annotationSelectors",
    "fieldSelectors", "nodeSelectors", "nodes", "pods", "podPhaseSelectors",
}


def check_selector(where, sel, problems):
    if not isinstance(sel, dict) or not sel:
        problems.append(f"{where}: a selector is required")
        return
    unknown = set(sel) - SELECTOR_KEYS
    if unknown:
        problems.append(f"{where}: unknown selector fields {sorted(unknown)}")
    if not sel.get("namespaces") and not sel.get("pods"):
        problems.append(f"{where}: name the namespaces (or pods) to select in")
    for e in sel.get("expressionSelectors") or []:
        if e.get("operator") not in {"In", "NotIn", "Exists", "DoesNotExist"} or not e.get("key"):
            problems.append(f"{where}: bad expressionSelector {e}")


def check_mode(where, spec, problems):
    mode = spec.get("mode")
    if mode not in MODES:
        problems.append(f"{where}: mode must be one of {sorted(MODES)}, not {mode!r}")
    if mode in {"fixed", "fixed-percent", "random-max-percent"} and not spec.get("value"):
        problems.append(f"{where}: mode {mode} needs a value")


def check_chaos(path, doc, problems):
    where = f"{path}"
    if doc.get("apiVersion") != "chaos-mesh.org/v1alpha1":
        problems.append(f"{where}: apiVersion must be chaos-mesh.org/v1alpha1")
    meta = doc.get("metadata") or {}
    if not meta.get("name") or not meta.get("namespace"):
        problems.append(f"{where}: metadata.name and metadata.namespace are required")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        problems.append(f"{where}: spec is required")
        return
    kind = doc.get("kind")
    check_mode(where, spec, problems)
    check_selector(f"{where} spec.selector", spec.get("selector"), problems)
    action = spec.get("action")
    if kind == "PodChaos":
        if action not in POD_ACTIONS:
            problems.append(f"{where}: PodChaos action must be one of {sorted(POD_ACTIONS)}")
        if action == "container-kill" and not spec.get("containerNames"):
            problems.append(f"{where}: container-kill needs containerNames")
        if action == "pod-failure" and not spec.get("duration"):
            problems.append(f"{where}: pod-failure needs a duration")
    elif kind == "NetworkChaos":
        if action not in NET_ACTIONS:
            problems.append(f"{where}: NetworkChaos action must be one of {sorted(NET_ACTIONS)}")
        direction = spec.get("direction", "to")
        if direction not in {"to", "from", "both"}:
            problems.append(f"{where}: direction must be to, from or both")
        if action == "partition":
            target = spec.get("target")
            if not isinstance(target, dict):
                problems.append(f"{where}: a partition needs a target (the other side)")
            else:
                check_mode(f"{where} target", target, problems)
                check_selector(f"{where} target.selector", target.get("selector"), problems)
        if direction in {"from", "both"} and not spec.get("target"):
            problems.append(f"{where}: direction {direction} needs a target")
        duration = spec.get("duration")
        if duration is not None and (not isinstance(duration, str) or not duration[-1:] in "smh"):
            problems.append(f"{where}: duration must be a Go duration string like 30s")
    else:
        problems.append(f"{where}: kind {kind!r} is not a chaos kind this suite uses")


def main(paths):
    problems = []
    chaos = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        is_chaos = "/chaos/" in path.replace("\\", "/")
        if is_chaos:
            text = text.replace("__LEADER__", "demo-0")
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            problems.append(f"{path}: does not parse: {e}")
            continue
        if not docs:
            problems.append(f"{path}: no YAML document")
        if is_chaos:
            for doc in docs:
                chaos += 1
                check_chaos(path, doc, problems)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {len(paths)} YAML files parse; {chaos} chaos-mesh objects carry the required fields")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
