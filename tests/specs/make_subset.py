"""Cut the providers' official OpenAPI descriptions down to what the contract tests need.

The full descriptions live in ``../shared/provider-specs`` beside the clone, which a fresh
clone does not have. This script keeps, for the operations of each provider that the
pipeline calls (SendGrid's: mail/send and the GETs of its suppression lists, in one file),
everything a request-validating mock server (Prism) reads: paths, parameters, request
bodies, responses, the schemas they reference (recursively), types, formats, patterns, enums,
required, servers and security schemes. It drops prose (descriptions, summaries, examples,
tags, external docs) and ``x-*`` vendor extensions. A response keeps its ``description``,
which OpenAPI requires, and the operation's success response its first example: Prism answers
with it (a body made up from the schema breaks the schema's own patterns). The result is
committed next to this file and read by the tests.

    python tests/specs/make_subset.py            # rewrite tests/specs/*.json from ../shared
    python tests/specs/make_subset.py --check    # exit 1 if a committed subset is stale
    python tests/specs/make_subset.py --source DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent.parent / "shared" / "provider-specs"

# subset's name -> the operations the pipeline calls: (source file, path, method). The email
# subset holds mail/send and the GETs of SendGrid's suppression lists that the email channel
# reads before sending: one spec, since the channel has one base URL.
SENDGRID_LISTS = ("bounces", "blocks", "spam_reports", "invalid_emails", "unsubscribes")
SUPPRESSIONS = "tsg_suppressions_v3.json"
OPERATIONS = {
    "email.json": [
        ("tsg_mail_v3.json", "/v3/mail/send", "post"),
        *[(SUPPRESSIONS, f"/v3/suppression/{name}", "get") for name in SENDGRID_LISTS],
        (SUPPRESSIONS, "/v3/asm/groups/{group_id}/suppressions", "get"),
    ],
    "sms.json": [
        ("twilio_api_v2010.json", "/2010-04-01/Accounts/{AccountSid}/Messages.json", "post"),
    ],
    "push.json": [
        ("fcm_v1_messages_send.yaml", "/v1/projects/{project_id}/messages:send", "post"),
    ],
}  # fmt: skip

PROSE = {"description", "summary", "example", "examples", "tags", "externalDocs", "title"}
# keys whose value maps names (of properties, status codes, media types...) to objects: a
# name there is data, never a keyword to drop
NAME_MAPS = {
    "properties", "patternProperties", "$defs", "definitions", "paths", "responses",
    "content", "headers", "encoding", "schemas", "parameters", "requestBodies",
    "securitySchemes", "variables", "scopes", "mapping", "dependentSchemas", "links",
}  # fmt: skip


def strip(node, key: str = "", names: bool = False):
    """*node* without prose; *names* says its keys are names, *key* is where it sits."""
    if isinstance(node, list):
        return [strip(item) for item in node]
    if not isinstance(node, dict):
        return node
    if names:
        # a response object needs its description (OpenAPI makes it required)
        return {k: strip(v, "response" if key == "responses" else "") for k, v in node.items()}
    kept = {}
    for k, v in node.items():
        drop = k.startswith("x-") or (k in PROSE and not (k == "description" and key == "response"))
        if not drop:
            kept[k] = strip(v, k, names=k in NAME_MAPS and isinstance(v, dict))
    return kept


def refs(node):
    """Every local ``$ref`` in *node*."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def subset(spec: dict, path: str, method: str) -> dict:
    """The description of one operation, with every component it references."""
    item = spec["paths"][path]
    operation = {k: v for k, v in item.items() if k in ("servers", "parameters")}
    operation[method] = item[method]
    out = {
        "openapi": spec["openapi"],
        "info": {k: spec["info"][k] for k in ("title", "version", "license") if k in spec["info"]},
        "servers": strip(spec.get("servers", [])),
        "paths": {path: strip(operation, names=False)},
    }
    keep_first_example(item[method], out["paths"][path][method])
    security = item[method].get("security", spec.get("security"))
    if "security" in spec:
        out["security"] = spec["security"]
    components: dict[str, dict] = {}
    schemes = {name for requirement in security or [] for name in requirement}
    for name in sorted(schemes):
        scheme = spec["components"]["securitySchemes"][name]
        components.setdefault("securitySchemes", {})[name] = strip(scheme)
    todo = list(refs(out["paths"]))
    while todo:
        ref = todo.pop()
        kind, name = ref.removeprefix("#/components/").split("/", 1)
        if name in components.get(kind, {}):
            continue
        found = strip(spec["components"][kind][name], "response" if kind == "responses" else "")
        components.setdefault(kind, {})[name] = found
        todo.extend(refs(found))
    out["components"] = {kind: dict(sorted(c.items())) for kind, c in sorted(components.items())}
    return out


def merge(parts: list[dict]) -> dict:
    """One description of the operations of *parts* (subsets of the same provider's specs):
    their paths, and their components, which must agree where two share a name."""
    out = json.loads(json.dumps(parts[0]))
    titles = [out["info"]["title"]]
    for part in parts[1:]:
        if part["info"]["title"] not in titles:
            titles.append(part["info"]["title"])
        for path, item in part["paths"].items():
            out["paths"].setdefault(path, {}).update(item)
        for kind, items in part["components"].items():
            known = out["components"].setdefault(kind, {})
            for name, value in items.items():
                if known.get(name, value) != value:
                    raise SystemExit(f"make_subset: components/{kind}/{name} differs between specs")
                known[name] = value
    out["info"]["title"] = " + ".join(titles)
    out["components"] = {k: dict(sorted(c.items())) for k, c in sorted(out["components"].items())}
    return out


def keep_first_example(source: dict, operation: dict) -> None:
    """Put back the first example of each inline success response of *operation*."""
    for status, response in source.get("responses", {}).items():
        if not status.startswith("2") or "content" not in response:
            continue
        for media, body in response["content"].items():
            kept = operation["responses"][status]["content"][media]
            if body.get("examples"):
                name, example = next(iter(body["examples"].items()))
                kept["examples"] = {name: {"value": example["value"]}}
            elif "example" in body:
                kept["example"] = body["example"]


def load(path: Path) -> dict:
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    import yaml  # only the FCM excerpt is YAML; PyYAML comes with the test extras

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def render(source: Path) -> dict[str, str]:
    """Subset file name -> its text, made from the descriptions in *source*."""
    texts, specs = {}, {}
    for target, operations in OPERATIONS.items():
        parts = []
        for name, path, method in operations:
            if name not in specs:
                specs[name] = load(source / name)
            parts.append(subset(specs[name], path, method))
        spec = merge(parts)
        texts[target] = json.dumps(spec, indent=1, ensure_ascii=False) + "\n"
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="default: %(default)s")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"make_subset: no provider specs at {args.source} (use --source)", file=sys.stderr)
        return 2
    stale = []
    for target, text in render(args.source).items():
        path = HERE / target
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(target)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"make_subset: stale in {HERE}: {', '.join(stale)}; rerun without --check")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
