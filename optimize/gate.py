"""Quality gate: run an optimised artifact (INT8 ONNX or IR, pruned weights, TensorRT engine) and
its FP32 reference on the inputs the model restores, score both against ground truth, fail when the
artifact loses more than a threshold, and say which layers to keep in higher precision.

Inputs (:func:`mirnet.sdk.mixture.model_inputs`): real pairs (``pairs``, or a ``data`` folder with
paired sub-folders), clean frames plus clipped AWGN ``sigma``, a camera preset ``protocol``, or by
default the degradations the reference's weights were trained with (their manifest's
``training.data``), synthesised from the clean frames in ``data``. Frame ``i`` uses
``np.random.default_rng([seed, i])``.

Scores: PSNR and SSIM of each output against the ground truth; the loss is the reference's mean
PSNR minus the artifact's (``loss_db``; also the SSIM loss and the worst frame's PSNR loss). The
gate passes when ``loss_db <= max_loss_db`` (default 0.15 dB) and, when ``min_psnr_db`` is given,
the mean PSNR of the artifact's output against the reference's output (a frame with identical
outputs counts as :data:`PSNR_CAP` dB) is at least that. Models that change the size (``scale > 1``)
are compared output to output only (``min_psnr_db``, default :data:`DEFAULT_MIN_PSNR_DB`).

Layer report (ONNX artifacts with QuantizeLinear/DequantizeLinear nodes): every compute layer
(Conv, ConvTranspose, MatMul, Gemm) of the artifact is located by tensor name in the FP32
reference ONNX (the ``mirnet export onnx`` graph; a weights reference is exported once and
cached). Each layer's activation input (the FP32 tensor its DequantizeLinear dequantizes, i.e.
the QuantizeLinear input), the dequantized input and its output are added as graph outputs in
both models and measured on a few small crops in ONNX Runtime (basic graph optimizations: Q/DQ
simulated in float, so the extra outputs do not change which kernels run). Per layer:

- ``sqnr_out_db``: SQNR of the artifact's layer output vs the reference's (accumulated error);
- ``sqnr_in_db``: the same for the layer's FP32 input before its quantizer;
- ``added_noise_db``: SQNR equivalent of the noise *this* layer adds, from the linear
  noise-to-signal ratios ``NSR_out - NSR_in`` (its input quantizer, its weights, its kernel).
  Lower is worse; the report lists the layers sorted by it, worst first;
- ``input_qdq_sqnr_db``: the input quantizer alone (FP32 input vs its Q/DQ round trip, inside the
  artifact): low values point at a bad activation scale.

The fix printed for a failing INT8 artifact keeps the worst layers in float:
``mirnet quantize ... --exclude MODULE,...`` (module paths, as the table prints them).
"""
from __future__ import annotations

import math
import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mirnet.sdk.errors import ArtifactError, ConfigError, InputError, QualityGateError, require
from mirnet.sdk.mixture import ModelInputs

__all__ = ["run_gate", "GateResult", "layer_report", "training_manifest", "DEFAULT_MAX_LOSS_DB",
           "DEFAULT_MIN_PSNR_DB", "PSNR_CAP"]

DEFAULT_MAX_LOSS_DB = 0.15
DEFAULT_MIN_PSNR_DB = 35.0
PSNR_CAP = 99.0  # dB reported for identical outputs (keeps means and JSON finite)
SUGGEST_LAYERS = 3


# ---------------------------------------------------------------------------------------------
# Scores (the torch-free foundation: mirnet.sdk.mixture, .evalsets, .ops, .metrics)
# ---------------------------------------------------------------------------------------------

def _run(backend, img: np.ndarray) -> np.ndarray:
    from mirnet.sdk.ops import run_padded

    spec = backend.input_spec
    return run_padded(backend.infer, img, multiple=spec.pad_multiple, scale=spec.scale)


def _feed(img: np.ndarray, multiple: int) -> np.ndarray:
    """One crop as a padded 1 x C x H x W feed for the per-layer analysis."""
    h, w = img.shape[:2]
    padded = np.pad(img, ((0, -h % multiple), (0, -w % multiple), (0, 0)), mode="reflect")
    return np.ascontiguousarray(padded.transpose(2, 0, 1))[None]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    from mirnet.sdk.metrics import psnr

    return min(psnr(a, b), PSNR_CAP)


def _ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    from mirnet.sdk.metrics import ssim

    if min(a.shape[:2]) < 11:
        return None
    return ssim(a, b)


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------

@dataclass
class GateResult:
    """The gate's report; ``to_dict()`` is what manifests and ``--json`` hold."""

    artifact: str
    reference: str
    data: str
    inputs: dict
    max_loss_db: float | None
    min_psnr_db: float | None
    passed: bool
    n: int
    psnr_db: float
    psnr_min_db: float
    ssim: float | None
    vs_clean: dict | None = None
    loss_db: float | None = None
    loss_ssim: float | None = None
    worst_frame: dict | None = None
    frames: list = field(default_factory=list)
    layers: list = field(default_factory=list)
    layer_analysis: dict = field(default_factory=dict)
    suggested_exclude: list = field(default_factory=list)
    fix: str | None = None
    #: what ran the artifact: its backend and, where it chose one, the precision (``openvino bf16``)
    runtime: str = ""

    @property
    def reason(self) -> str:
        """Why the gate failed (empty when it passed)."""
        parts = []
        if self.loss_db is not None and self.max_loss_db is not None and self.loss_db > self.max_loss_db:
            parts.append(f"it loses {self.loss_db:.2f} dB PSNR against ground truth (limit --max-loss-db "
                         f"{self.max_loss_db:g})")
        if self.min_psnr_db is not None and self.psnr_db < self.min_psnr_db:
            parts.append(f"its output is {self.psnr_db:.2f} dB PSNR from the reference's (limit --min-psnr-db "
                         f"{self.min_psnr_db:g})")
        return " and ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self, top: int | None = None) -> str:
        """Human-readable report: verdict, metrics, worst layers, fix."""
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [f"quality gate {verdict}: {Path(self.artifact).name} vs {Path(self.reference).name} on "
                 f"{self.n} frame(s): {self.inputs.get('description')}" + (f" of {self.data}" if self.data else "")
                 + (f"; the artifact ran on {self.runtime}" if self.runtime else "")]
        if self.vs_clean:
            a, r = self.vs_clean["artifact"], self.vs_clean["reference"]
            lines.append(f"  vs ground truth: reference {r['psnr_db']:.2f} dB / SSIM {r['ssim']:.4f}, artifact "
                         f"{a['psnr_db']:.2f} dB / SSIM {a['ssim']:.4f}: loss {self.loss_db:+.3f} dB (limit "
                         f"{self.max_loss_db:g}), SSIM loss {self.loss_ssim:+.4f}")
            if self.worst_frame:
                lines.append(f"  worst frame: {self.worst_frame['name']} loses {self.worst_frame['loss_db']:+.3f} dB")
        lines.append(f"  artifact vs reference output: PSNR {self.psnr_db:.2f} dB (min frame {self.psnr_min_db:.2f} dB"
                     + (f", limit {self.min_psnr_db:g} dB" if self.min_psnr_db is not None else "") + ")"
                     + (f"   SSIM {self.ssim:.4f}" if self.ssim is not None else ""))
        la = self.layer_analysis or {}
        if la.get("status") == "done" and self.layers:
            shown = self.layers[:top] if top else self.layers
            lines.append(f"  layers adding the most error ({la.get('measured', 0)} measured on "
                         f"{la.get('frames', 0)} crop(s) of {la.get('crop')} px; worst first):")
            lines.append(f"    {'added dB':>8} {'out dB':>7} {'in dB':>7} {'in Q/DQ dB':>10}  module  (node)")
            for row in shown:
                def f(v):
                    return f"{v:.1f}" if v is not None else "-"
                lines.append(f"    {f(row['added_noise_db']):>8} {f(row['sqnr_out_db']):>7} {f(row['sqnr_in_db']):>7} "
                             f"{f(row['input_qdq_sqnr_db']):>10}  {row['module'] or '-'}  ({row['node']})")
        elif la.get("status") == "skipped":
            lines.append(f"  per-layer analysis skipped: {la.get('reason')}")
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Per-layer analysis
# ---------------------------------------------------------------------------------------------

def _db(nsr: float) -> float:
    if nsr <= 0:
        return PSNR_CAP
    if not math.isfinite(nsr):
        return -PSNR_CAP
    return float(min(PSNR_CAP, max(-PSNR_CAP, -10.0 * math.log10(nsr))))


class _Acc:
    """Accumulated signal and error energy of one tensor over frames."""

    __slots__ = ("sig", "err")

    def __init__(self):
        self.sig = 0.0
        self.err = 0.0

    def add(self, ref: np.ndarray, test: np.ndarray) -> None:
        if ref.shape != test.shape:
            raise ArtifactError(f"tensor shapes differ between artifact and reference: {test.shape} vs {ref.shape}")
        r = ref.astype(np.float64, copy=False)
        self.sig += float(np.sum(r * r))
        self.err += float(np.sum((r - test) ** 2))

    @property
    def nsr(self) -> float:
        if self.sig == 0:
            return 0.0 if self.err == 0 else math.inf
        return self.err / self.sig


def _session(model, threads: int | None):
    ort = require("onnxruntime", "ort")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.intra_op_num_threads = threads or 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's private exception types
        raise ArtifactError(f"ONNX Runtime cannot run the graph with extra outputs ({exc})") from exc


def _collect(model, names: list[str], feeds: list[np.ndarray], input_name: str, threads: int | None,
             chunk: int = 160) -> list[dict]:
    """Values of tensors ``names`` for each feed, in passes of ``chunk`` extra outputs."""
    from .onnx_tools import add_outputs

    per_frame: list[dict] = [{} for _ in feeds]
    names = [n for n in dict.fromkeys(names) if n != input_name]
    for start in range(0, len(names), chunk):
        part = names[start:start + chunk]
        session = _session(add_outputs(model, part), threads)
        outputs = [o.name for o in session.get_outputs()]
        for k, x in enumerate(feeds):
            values = session.run(outputs, {input_name: x})
            per_frame[k].update({n: v for n, v in zip(outputs, values) if n in part})
        del session
    for k, x in enumerate(feeds):
        per_frame[k][input_name] = x
    return per_frame


def layer_report(artifact_onnx: str | os.PathLike, reference_onnx: str | os.PathLike,
                 feeds: list[np.ndarray], *, config: dict | None = None, input_name: str = "input",
                 threads: int | None = None) -> dict:
    """Per-layer error of a Q/DQ ``artifact_onnx`` against the FP32 ``reference_onnx`` on the
    NCHW ``feeds`` (see the module docstring). Returns ``{"status", "layers" (worst first),
    "measured", "unmatched", ...}``; status "skipped" with a reason for graphs without Q/DQ."""
    from .onnx_tools import (COMPUTE_OPS, _is_constant, _producers, _trace_back, known_modules, load,
                             module_path, qdq_pairs, weight_dq_nodes)

    art = load(artifact_onnx)
    pairs, wdq = qdq_pairs(art), weight_dq_nodes(art)
    if not pairs and not wdq:
        return {"status": "skipped", "reason": "the artifact has no QuantizeLinear/DequantizeLinear nodes "
                                               "(per-layer analysis applies to quantized ONNX); output error only"}
    ref = load(reference_onnx)
    ref_names = {o for n in ref.graph.node for o in n.output} | {i.name for i in ref.graph.input}
    graph = art.graph
    producers = _producers(graph)
    weight_dq_outputs = {n.output[0] for n in wdq}
    modules = known_modules(config)

    layers = []
    for node in graph.node:
        if node.op_type not in COMPUTE_OPS or not node.output:
            continue
        inputs, weight_quantized = [], False
        candidates = node.input[:1] if node.op_type in ("Conv", "ConvTranspose") else node.input[:2]
        for name in node.input[1:2]:
            weight_quantized |= name in weight_dq_outputs
        for x in candidates:
            if not x or _is_constant(x, graph, producers):
                continue
            dq = producers.get(x)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producers.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    inputs.append((_trace_back(q.input[0], producers), x))
                    continue
            inputs.append((_trace_back(x, producers), None))
        if not inputs:
            continue
        layers.append({"node": node.name, "op": node.op_type, "module": module_path(node.name, modules),
                       "inputs": inputs, "output": node.output[0],
                       "quantized": weight_quantized or any(d is not None for _, d in inputs)})

    art_names = [t for L in layers for raw, dq in L["inputs"] for t in (raw, dq) if t] + [L["output"] for L in layers]
    ref_wanted = [t for t in art_names if t in ref_names]
    art_values = _collect(art, art_names, feeds, input_name, threads)
    ref_values = _collect(ref, ref_wanted, feeds, input_name, threads)

    def acc(ref_name: str, art_name: str, local: bool = False) -> _Acc | None:
        a = _Acc()
        for rv, av in zip(ref_values, art_values):
            source = av if local else rv
            if ref_name not in source or art_name not in av:
                return None
            a.add(source[ref_name], av[art_name])
        return a

    rows, unmatched = [], 0
    for L in layers:
        out = acc(L["output"], L["output"])
        ins = [acc(raw, raw) for raw, _ in L["inputs"]]
        if out is None or any(i is None for i in ins):
            unmatched += 1
            continue
        locals_ = [acc(raw, dq, local=True) for raw, dq in L["inputs"] if dq]
        nsr_in = max(i.nsr for i in ins)
        added = max(out.nsr - nsr_in, 0.0)
        rows.append({
            "node": L["node"], "module": L["module"], "op": L["op"], "quantized": L["quantized"],
            "sqnr_out_db": round(_db(out.nsr), 2), "sqnr_in_db": round(_db(nsr_in), 2),
            "added_noise_db": round(_db(added), 2),
            "input_qdq_sqnr_db": round(min(_db(a.nsr) for a in locals_), 2) if locals_ else None,
            "_added": added,
        })
    rows.sort(key=lambda r: -r["_added"])
    for r in rows:
        del r["_added"]
    return {"status": "done", "layers": rows, "measured": len(rows), "unmatched": unmatched,
            "qdq_pairs": len(pairs), "weight_dq": len(wdq)}


def _suggest(rows: list[dict], k: int = SUGGEST_LAYERS) -> list[str]:
    """Distinct module paths (node names where unknown) of the ``k`` worst quantized layers."""
    out: list[str] = []
    for r in rows:
        if not r["quantized"] or r["added_noise_db"] >= PSNR_CAP:
            continue
        name = r["module"] or r["node"]
        if name not in out:
            out.append(name)
        if len(out) == k:
            break
    return out


_INPUT_FLAGS = {"pairs": "--pairs", "awgn": "--sigma", "protocol": "--protocol"}


def _fix_command(manifest: dict | None, artifact: Path, exclude: list[str]) -> str:
    q = (manifest or {}).get("quantization") or {}
    previous = list(q.get("exclude") or [])
    merged = shlex.quote(",".join(dict.fromkeys(previous + exclude)))  # patterns hold shell globs (*gcnet*)
    if q.get("target"):
        source = (manifest.get("source") or {}).get("file", "MODEL")
        cal = manifest.get("calibration") or {}
        args = [f"--target {q['target']}"]
        if cal.get("folder"):
            args.append(f"--calib {shlex.quote(str(cal['folder']))}")
        inputs = cal.get("inputs") or {}
        if inputs.get("kind") in _INPUT_FLAGS:
            args.append(f"{_INPUT_FLAGS[inputs['kind']]} {inputs['value']}")
        if cal.get("method"):
            args.append(f"--method {cal['method']}")
        if cal.get("percentile"):
            args.append(f"--percentile {cal['percentile']}")
        if cal.get("images"):
            args.append(f"--calib-images {cal['images']}")
        if cal.get("size"):
            args.append(f"--calib-size {cal['size']}")
        command = (f"mirnet quantize {shlex.quote(source)} {' '.join(args)} --exclude {merged} "
                   f"-o {shlex.quote(artifact.name)} --force")
        qat = (" or fine-tune the quantized model: add --qat-steps 2000 --data DIR (clean training images)"
               if q["target"] in ("cpu", "tensorrt") else "")
        return f"keep the worst layers in float: {command}{qat}"
    return f"keep the worst layers in float: mirnet quantize MODEL ... --exclude {merged}"


# ---------------------------------------------------------------------------------------------
# The gate
# ---------------------------------------------------------------------------------------------

def _reference_onnx(reference: Path) -> Path:
    if reference.suffix.lower() == ".onnx":
        return reference
    require("torch", "optimize")
    from .export_onnx import cached_export

    return cached_export(reference)


def training_manifest(path: Path) -> dict | None:
    """The manifest that records how the model at ``path`` was trained: its own, or (an export or
    quantized artifact) that of the weights file its manifest names as ``source`` in the same folder."""
    from mirnet.sdk import artifact as artifact_mod

    if not artifact_mod.sidecar_path(path).is_file():
        return None
    manifest = artifact_mod.read_manifest(path, verify=False)
    if manifest.get("training"):
        return manifest
    source = (manifest.get("source") or {}).get("file")
    if source:
        weights = path.parent / Path(source).name
        if weights != path and weights.is_file() and artifact_mod.sidecar_path(weights).is_file():
            found = artifact_mod.read_manifest(weights, verify=False)
            if found.get("training"):
                return found
    return manifest


def run_gate(artifact: str | os.PathLike, reference: str | os.PathLike, data: str | os.PathLike | None = None, *,
             inputs: ModelInputs | None = None, pairs: str | None = None, sigma: float | None = None,
             protocol: str | None = None, max_loss_db: float = DEFAULT_MAX_LOSS_DB, min_psnr_db: float | None = None,
             limit: int | None = None, crop: int | None = None, layers: str = "always", layer_frames: int = 2,
             layer_crop: int = 64, threads: int | None = None, seed: int = 0, check: bool = True) -> GateResult:
    """Compare ``artifact`` with its FP32 ``reference`` (weights, a bundled name or an FP32 ONNX) on
    ``inputs`` (default: :func:`mirnet.sdk.mixture.model_inputs` of the reference's training record,
    or ``pairs``/``sigma``/``protocol``) made from the clean frames in ``data`` (see the module
    docstring). ``layers``: "always", "on-failure" or "never" (per-layer report of Q/DQ ONNX
    artifacts). With ``check`` a failing gate raises :class:`QualityGateError` (exit code 6) whose
    ``result`` holds the report; otherwise the result says ``passed=False``."""
    from mirnet.sdk import artifact as artifact_mod
    from mirnet.sdk import zoo
    from mirnet.sdk.backends import open_backend
    from mirnet.sdk.evalsets import centre_crop
    from mirnet.sdk.mixture import model_inputs

    if layers not in ("always", "on-failure", "never"):
        raise ConfigError(f"layers={layers!r}: valid values are always, on-failure, never")
    for name, value in (("--max-loss-db", max_loss_db), ("--min-psnr-db", min_psnr_db)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ConfigError(f"{name} {value!r}: give a value in dB, e.g. {0.15 if 'loss' in name else 35}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"--limit {limit!r}: give a number of frames >= 1")
    art_path = zoo.resolve_weights(artifact)
    ref_path = zoo.resolve_weights(reference)
    if art_path.resolve() == ref_path.resolve():
        raise ConfigError(f"the artifact and the reference are the same file ({art_path}); give the FP32 "
                          f"model as --reference")
    if inputs is None:
        manifest = training_manifest(ref_path) or training_manifest(art_path)
        inputs = model_inputs(manifest, folder=data, pairs=pairs, sigma=sigma, protocol=protocol,
                              model=ref_path.name)
    if inputs.kind != "pairs" and (data is None or not Path(data).is_dir()):
        raise ConfigError(f"--data {str(data)!r} is not a folder of images (the clean frames the gate "
                          f"degrades with {inputs.description})")
    evalset = inputs.evalset(None if data is None else str(data), limit=limit, crop=crop, seed=seed)
    if not len(evalset):
        raise InputError(f"no frames: {evalset.description} gave none")
    rows = []
    # the reference in exact FP32: an ONNX on ONNX Runtime (auto could pick OpenVINO's bf16), weights on PyTorch
    ref_backend = "ort" if ref_path.suffix.lower() == ".onnx" else "auto"
    with open_backend(art_path, threads=threads) as art_b, \
            open_backend(ref_path, ref_backend, threads=threads) as ref_b:
        a_spec, r_spec = art_b.input_spec, ref_b.input_spec
        if (a_spec.channels, a_spec.out_channels, a_spec.scale) != (r_spec.channels, r_spec.out_channels, r_spec.scale):
            raise ArtifactError(
                f"{art_path.name} ({a_spec.channels}->{a_spec.out_channels} channels, x{a_spec.scale}) and "
                f"{ref_path.name} ({r_spec.channels}->{r_spec.out_channels}, x{r_spec.scale}) are different "
                f"networks; give the FP32 model the artifact was made from as --reference")
        truth = a_spec.scale == 1
        if not truth and min_psnr_db is None:
            min_psnr_db = DEFAULT_MIN_PSNR_DB
        for name, (noisy, clean) in zip(evalset.names, evalset.pairs):
            if noisy.shape[2] != a_spec.channels:
                raise InputError(f"{name}: {noisy.shape[2]}-channel frame, the model takes {a_spec.channels}")
            a, r = _run(art_b, noisy), _run(ref_b, noisy)
            row = {"name": name, "psnr_db": round(_psnr(a, r), 3), "ssim": _ssim(a, r)}
            if truth:
                row.update(artifact_vs_clean_db=_psnr(a, clean), reference_vs_clean_db=_psnr(r, clean),
                           artifact_vs_clean_ssim=_ssim(a, clean), reference_vs_clean_ssim=_ssim(r, clean))
            rows.append(row)
    psnrs = [r["psnr_db"] for r in rows]
    ssims = [r["ssim"] for r in rows if r["ssim"] is not None]
    mean_psnr = float(np.mean(psnrs))
    result = GateResult(artifact=str(art_path), reference=str(ref_path), data="" if data is None else str(data),
                        inputs=inputs.record(), max_loss_db=float(max_loss_db) if truth else None,
                        min_psnr_db=None if min_psnr_db is None else float(min_psnr_db), passed=False, n=len(rows),
                        psnr_db=round(mean_psnr, 3), psnr_min_db=round(min(psnrs), 3),
                        ssim=round(float(np.mean(ssims)), 5) if ssims else None, frames=rows,
                        runtime=art_b.description)
    if truth:
        def mean(key):
            vals = [r[key] for r in rows if r[key] is not None]
            return float(np.mean(vals)) if vals else None
        result.vs_clean = {side: {"psnr_db": mean(f"{side}_vs_clean_db"), "ssim": mean(f"{side}_vs_clean_ssim")}
                           for side in ("artifact", "reference")}
        result.loss_db = round(result.vs_clean["reference"]["psnr_db"] - result.vs_clean["artifact"]["psnr_db"], 4)
        a_ssim, r_ssim = result.vs_clean["artifact"]["ssim"], result.vs_clean["reference"]["ssim"]
        result.loss_ssim = None if a_ssim is None else round(r_ssim - a_ssim, 5)
        worst = max(rows, key=lambda r: r["reference_vs_clean_db"] - r["artifact_vs_clean_db"])
        result.worst_frame = {"name": worst["name"],
                              "loss_db": round(worst["reference_vs_clean_db"] - worst["artifact_vs_clean_db"], 4)}
    passed = not result.reason
    result.passed = passed

    want_layers = layers == "always" or (layers == "on-failure" and not passed)
    if art_path.suffix.lower() != ".onnx":
        result.layer_analysis = {"status": "skipped", "reason": f"{art_path.suffix} artifact: per-layer analysis "
                                 f"needs the Q/DQ ONNX it was built from; output error only"}
    elif want_layers:
        manifest = artifact_mod.read_manifest(art_path, verify=False)
        pad = a_spec.pad_multiple
        size = max(pad, layer_crop // pad * pad)
        feeds = [_feed(centre_crop(noisy, size), pad) for noisy, _ in evalset.pairs[:max(1, layer_frames)]]
        report = layer_report(art_path, _reference_onnx(ref_path), feeds, config=manifest.get("config"),
                              input_name=a_spec.input_name, threads=threads)
        result.layers = report.pop("layers", [])
        result.layer_analysis = {**report, "frames": len(feeds), "crop": size}
        if not passed and result.layers:
            result.suggested_exclude = _suggest(result.layers)
            if result.suggested_exclude:
                result.fix = _fix_command(manifest, art_path, result.suggested_exclude)
    if not passed and not result.fix:
        result.fix = ("keep sensitive layers in float (mirnet quantize ... --exclude MODULE,...; run `mirnet gate "
                      "ARTIFACT.onnx` for the per-layer table), calibrate on more or more representative frames, "
                      "fine-tune with QAT (--qat-steps N --data DIR), or raise --max-loss-db")
    if check and not passed:
        raise QualityGateError(f"quality gate failed: {art_path.name} vs {ref_path.name}: {result.reason}"
                               + (f". Fix: {result.fix}" if result.fix else ""), result=result.to_dict())
    return result
