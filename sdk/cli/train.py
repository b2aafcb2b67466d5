"""``mirnet train`` (a YAML run) and ``mirnet eval`` (PSNR/SSIM of a model or a baseline)."""
from __future__ import annotations

import json
import sys

from ..camera import PRESETS
from .common import add_gray_model, add_max_pixels, max_pixels, non_negative_float, positive_int


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model from a YAML config")
    p.add_argument("--config", required=True, help="training config (.yaml), e.g. train/configs/denoise-lite.yaml")
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resumable)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    p = sub.add_parser("eval", help="PSNR/SSIM of a model or a classical baseline on a folder")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="bundled name or .onnx/.safetensors/.pth")
    who.add_argument("--baseline", choices=("nlm",), help="OpenCV non-local means (tuned per --protocol)")
    p.add_argument("--data", required=True, help="clean images (with --sigma or --protocol) or a folder of pairs")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--sigma", type=non_negative_float, help="AWGN sigma in 0-255 units (benchmark protocol)")
    how.add_argument("--pairs", action="store_true", help="DATA holds low/high, NOISY/GT, input/target "
                     "or lq/gt sub-folders")
    how.add_argument("--protocol", choices=tuple(PRESETS), help="clean images filmed by a named, seeded "
                     "camera preset (sensor noise, Bayer or mono sensor, JPEG/H.264 4:2:0 delivery)")
    p.add_argument("--y", action="store_true", help="PSNR/SSIM on the Y channel (BT.601)")
    p.add_argument("--clip", action="store_true", help="clip and round the noisy input to uint8 levels")
    p.add_argument("--gray", action="store_true", help="with --sigma: monochrome frames (luma target, one "
                   "channel of noise in all three)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--crop", type=int, default=None, metavar="N", help="centre crop N x N (a multiple of 8)")
    p.add_argument("--holdout-every", type=int, default=0, metavar="K",
                   help="with --pairs: only every K-th pair (the ones training with holdout_every K left out)")
    p.add_argument("--tune", action="store_true", help="with --baseline nlm: pick its strength on DATA first "
                   "(validation data only) and print it")
    p.add_argument("--backend", default="auto", choices=("auto", "ort", "openvino", "torch"))
    add_gray_model(p)
    p.add_argument("--threads", type=positive_int, default=None)
    add_max_pixels(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_eval)


def run_train(args) -> int:
    from mirnet.train.loop import train

    path = train(args.config, resume=args.resume, max_steps=args.max_steps, device=args.device,
                 quiet=args.quiet)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def run_eval(args) -> int:
    from ..evaluate import evaluate

    with max_pixels(args.max_pixels):
        result = evaluate(args.data, model=args.model, baseline=args.baseline, sigma=args.sigma,
                          pairs=args.pairs, protocol=args.protocol, y_channel=args.y, clip=args.clip,
                          limit=args.limit, crop=args.crop, tune=args.tune, backend=args.backend,
                          threads=args.threads, holdout_every=args.holdout_every, gray=args.gray,
                          gray_model=args.gray_model)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']} on {result['data']} ({result['n']} images)\n"
              f"  protocol: {result['protocol']}\n"
              f"  PSNR {result['psnr']:.2f} dB (input {result['input_psnr']:.2f} dB)   SSIM {result['ssim']:.4f}   "
              f"{result['seconds_per_image'] * 1000:.0f} ms/image"
              + (f"\n  NLM h={result['nlm_params']['h']}" if "nlm_params" in result else ""))
    return 0
