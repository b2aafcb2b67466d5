"""``mirnet info`` (an artifact's manifest and the backend ``auto`` runs it with here) and ``mirnet
variants`` (the named network configurations)."""
from __future__ import annotations

import json


def add_parsers(sub) -> None:
    p = sub.add_parser("info", help="print an artifact's manifest and the backend auto runs it with here")
    p.add_argument("artifact", help="a .safetensors, .onnx, .xml or .engine file, or a bundled model name")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
    p.set_defaults(func=run_info)

    p = sub.add_parser("variants", help="list the named network configurations")
    p.add_argument("--macs", action="store_true", help="also count parameters and MACs (from the config, "
                   "no torch needed)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_variants)


def run_info(args) -> int:
    from .. import artifact, zoo

    path = zoo.resolve_weights(args.artifact)
    manifest = artifact.read_manifest(path, verify=not args.no_verify)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    io = manifest["io"]
    print(f"{path}  ({manifest['kind']}, {manifest['precision']})")
    print(f"  backend   auto here: {_auto_backend(args.artifact, path)}")
    gray = zoo.gray_companion(args.artifact)
    if gray:
        print(f"  gray      gray frames (1 channel, or 3 equal ones) run on the bundled {gray}")
    print(f"  variant   {manifest.get('variant') or '-'}")
    print(f"  sha256    {manifest['sha256']}")
    print(f"  created   {manifest.get('created', '-')}")
    print(f"  input     {io['input']['name']} N x {io['input']['channels']} x H x W {io['input']['dtype']} "
          f"{io['input']['color']} {io['input']['range']}, H and W multiples of {io['input']['pad_multiple']}")
    print(f"  output    {io['output']['name']} N x {io['output']['channels']} x H*{io['output']['scale']} "
          f"x W*{io['output']['scale']}")
    print("  config    " + ", ".join(f"{k}={v}" for k, v in manifest["config"].items()))
    if manifest.get("source"):
        print(f"  source    {manifest['source']['file']} ({manifest['source']['sha256'][:16]}...)")
    for key in ("opset", "parity", "build", "metrics"):
        if manifest.get(key) is not None:
            print(f"  {key:<9} {json.dumps(manifest[key])}")
    if manifest.get("training"):
        print(f"  training  {_training_summary(manifest['training'])} (--json: the full record)")
    if manifest.get("gate"):
        print(f"  gate      {_gate_summary(manifest['gate'])}")
    return 0


def _gate_summary(gate: dict) -> str:
    """One line: the quality gate's verdict, loss against ground truth, frames and runtime."""
    if gate.get("passed") is None:
        return gate.get("status", "not run") + (f" ({gate['reason']})" if gate.get("reason") else "")
    line = "passed" if gate["passed"] else "FAILED (do not deploy)"
    if gate.get("loss_db") is not None:
        line += f": loses {gate['loss_db']:.3f} dB against ground truth (limit {gate.get('max_loss_db')})"
    line += f"; {gate.get('n')} frame(s)" + (f" of {gate['data']}" if gate.get("data") else "")
    return line + (f", run on {gate['runtime']}" if gate.get("runtime") else "")


def _training_summary(training: dict) -> str:
    """One line: run name, steps, time, machine and the inputs it was trained on."""
    from ..errors import ConfigError
    from ..mixture import Mixture

    parts = [str(training.get("name", "?"))]
    if training.get("steps") is not None:
        parts.append(f"{training['steps']:,} steps")
    if training.get("minutes") is not None:
        parts.append(f"{training['minutes']:.0f} min")
    if training.get("machine"):
        parts.append(f"on {training['machine']}")
    data = training.get("data") or []
    try:
        mixture = Mixture.from_records(data)
    except ConfigError:
        mixture = None
    pairs = sum(1 for d in data if isinstance(d, dict) and d.get("clean") is None)
    inputs = [mixture.describe()] if mixture else []
    if pairs:
        inputs.append(f"{pairs} paired source(s)")
    return ", ".join(parts) + (f"; inputs: {' + '.join(inputs)}" if inputs else "")


def _auto_backend(model: str, shown) -> str:
    """What ``backend="auto"`` runs ``model`` with on this machine (CPU), in words: the backend, its
    precision where it chooses one and why, the file when it is not the one ``shown``; or why none."""
    from ..backends import choose_backend
    from ..errors import MirnetError

    try:
        name, path = choose_backend(model)
        if name == "openvino":
            from ..backends.openvino import choose_precision

            precision, why = choose_precision()
            name = f"{name} {precision} ({why})"
    except MirnetError as exc:
        return f"none ({exc})"
    return name if path == shown else f"{name} on {path.name}"


def run_variants(args) -> int:
    from ..model import VARIANTS
    from ..model.complexity import count_macs, count_params

    rows = []
    for name, cfg in VARIANTS.items():
        row = {"variant": name, **cfg.to_dict()}
        if args.macs:
            row["params"] = count_params(cfg)
            row["gmac_256"] = round(count_macs(cfg, 256, 256) / 1e9, 3)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        extra = f"  params={row['params']:,}  GMAC/256x256={row['gmac_256']}" if args.macs else ""
        cfg = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("variant", "params", "gmac_256"))
        print(f"{row['variant']:<20}{extra}\n    {cfg}")
    return 0
