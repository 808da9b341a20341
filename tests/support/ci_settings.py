"""Turns a step's `settings:` into PLUGIN_* variables exactly as Drone and Woodpecker do.

Woodpecker: pipeline/frontend/yaml/compiler/settings/params.go; Drone: drone-runner-docker
engine/compiler/encoder/encoder.go. Both:
  - a string is passed as is; a boolean or a number as its text (`true`, `8`);
  - a list of scalars is comma-joined (`[next, latest]` -> `next,latest`);
  - a list holding a map or a list is JSON;
  - a map is JSON with its keys SORTED (Go's encoding/json), compact;
  - `{from_secret: name}` becomes a plain (masked) variable holding the secret.

Usage:
  ci_settings.py encode            reads one settings mapping as YAML on stdin
  ci_settings.py examples FILE...  every plugin step found in FILEs' YAML (Markdown: ```yaml blocks)
  ci_settings.py runner ACTION     reads a step's `with:` as YAML on stdin; prints the INPUT_*
                                   variables a GitHub/Forgejo runner sets for a docker action
Prints JSON. A secret is reported by name in `secrets` (its value is the test's to choose).
"""

import json
import re
import sys

import yaml


def scalar(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def jsonable(v):
    # Go's json.Marshal of what the YAML decoder produced: maps sorted by key.
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def encode(settings):
    env, secrets = {}, []
    for key, v in settings.items():
        name = "PLUGIN_" + str(key).upper()
        if isinstance(v, dict) and set(v) == {"from_secret"}:
            secrets.append(name)
            env[name] = ""
        elif isinstance(v, dict):
            env[name] = jsonable(v)
        elif isinstance(v, list):
            if any(isinstance(i, (dict, list)) for i in v):
                env[name] = jsonable(v)
            else:
                env[name] = ",".join(scalar(i) for i in v)
        else:
            env[name] = scalar(v)
    return {"env": env, "secrets": secrets}


def blocks(path):
    """(first line, YAML text) of every YAML example in a file."""
    text = open(path, encoding="utf-8").read()
    if path.endswith((".yml", ".yaml")):
        return [(1, text)]
    out = []
    for m in re.finditer(r"^```ya?ml[^\n]*\n(.*?)^```", text, re.S | re.M):
        out.append((text.count("\n", 0, m.start()) + 2, m.group(1)))
    return out


def action_inputs(with_):
    """A GitHub/Forgejo Actions step's `with:`: every input as INPUT_<NAME>, as text."""
    env = {"INPUT_" + str(k).upper(): scalar(v) for k, v in with_.items()}
    return {"env": env, "secrets": []}


def runner_env(action_path, with_):
    """What a runner (actions/runner ContainerActionHandler, nektos/act) sets for a docker
    action: INPUT_<NAME> for EVERY input action.yml declares: the `with:` value, else the
    input's `default:`, else empty. `with:` keys it does not declare are passed too."""
    action = yaml.safe_load(open(action_path, encoding="utf-8"))
    env = {}
    for name, spec in (action.get("inputs") or {}).items():
        default = (spec or {}).get("default", "")
        env["INPUT_" + str(name).upper().replace(" ", "_")] = scalar(with_.get(name, default))
    for name, v in with_.items():
        env.setdefault("INPUT_" + str(name).upper().replace(" ", "_"), scalar(v))
    return {"env": env, "secrets": []}


def steps(node, found):
    """Every mapping with a `settings:` mapping whose image (if any) is this plugin, and
    every Actions step that `uses:` this plugin's action (its `with:`)."""
    if isinstance(node, dict):
        s = node.get("settings")
        image = str(node.get("image", "plugin-azure-storage"))
        if isinstance(s, dict) and "plugin-azure-storage" in image:
            found.append(encode(s))
        w = node.get("with")
        if isinstance(w, dict) and "plugin-azure-storage" in str(node.get("uses", "")):
            found.append(action_inputs(w))
        for v in node.values():
            if v is not s and v is not w:
                steps(v, found)
    elif isinstance(node, list):
        for v in node:
            steps(v, found)


def examples(paths):
    out = []
    for path in paths:
        for line, text in blocks(path):
            entry = {"file": path, "line": line, "steps": [], "error": None}
            try:
                found = []
                for doc in yaml.safe_load_all(text):
                    steps(doc, found)
                entry["steps"] = found
            except yaml.YAMLError as e:
                entry["error"] = str(e)
            out.append(entry)
    return out


if __name__ == "__main__":
    if sys.argv[1] == "encode":
        print(json.dumps(encode(yaml.safe_load(sys.stdin.read()) or {})))
    elif sys.argv[1] == "runner":
        print(json.dumps(runner_env(sys.argv[2], yaml.safe_load(sys.stdin.read()) or {})))
    else:
        print(json.dumps(examples(sys.argv[2:])))
