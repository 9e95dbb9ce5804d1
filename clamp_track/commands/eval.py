"""``clamp-track eval``: COCO keypoint AP of a model or of a results file.

    clamp-track eval --weights CKPT --data ANN.json --images DIR [--json OUT]
    clamp-track eval --predictions RESULTS.json --data ANN.json [--json OUT]

With ``--weights`` the official protocol runs (ground-truth boxes, flip test, rescoring, OKS
NMS) in fp32, the official test precision (``--fp16``: fp16 autocast on CUDA); a results file
(COCO keypoint results format, keypoints in the annotation file's order) is scored as it is.
The keypoint set, and so the OKS sigmas, comes from the annotation file's category or
``--keypoints``.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """Register ``eval``."""
    parser = sub.add_parser(
        "eval",
        help="evaluate weights or a results file on a COCO keypoint file (OKS AP, PCK)",
        description="Print AP, AP50, AP75, APM, APL, AR (and PCK@0.05/0.1 for --weights) "
        "and optionally write them as JSON.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--weights", help="clamp-track or official checkpoint to evaluate")
    what.add_argument("--predictions",
                      help="COCO keypoint results JSON ([{image_id, category_id, keypoints, "
                      "score}, ...]) to score")
    parser.add_argument("--data", required=True, help="COCO keypoint annotation file")
    parser.add_argument("--images", help="image folder of --data (required with --weights)")
    parser.add_argument("--keypoints",
                        help="keypoint set: ap10k, animalpose or a YAML file (default: from "
                        "the annotation file's category, or the checkpoint's)")
    parser.add_argument("--json", metavar="OUT", help="write the metrics to this JSON file")
    parser.add_argument("--save-predictions", metavar="RESULTS",
                        help="with --weights: write the COCO keypoint results here")
    parser.add_argument("--no-flip", action="store_true", help="without flip test")
    parser.add_argument("--fp16", action="store_true",
                        help="fp16 autocast on CUDA (faster; default fp32, the official "
                        "test precision)")
    parser.add_argument("--batch-size", type=int, default=32, help="crops per forward pass")
    parser.add_argument("--workers", type=int, default=2, help="data loading processes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip damaged annotation records instead of stopping")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, write the JSON."""
    import json

    from clamp_track.config import atomic_write_text
    from clamp_track.engine.evaluate import format_metrics
    from clamp_track.errors import InputError

    if args.weights:
        if not args.images:
            raise InputError("--weights needs --images (the folder of the annotation file's "
                             "images)")
        metrics = _eval_weights(args)
    else:
        metrics = _eval_predictions(args)
    print(format_metrics(metrics))
    if args.json:
        atomic_write_text(args.json, json.dumps(metrics, indent=1) + "\n")
    return 0


def _eval_weights(args) -> dict:
    import json

    from clamp_track.config import atomic_write_text
    from clamp_track.data.coco import file_order_results, load_coco
    from clamp_track.data.dataset import TopDownDataset
    from clamp_track.engine.evaluate import EvalConfig, evaluate
    from clamp_track.engine.trainer import resolve_device
    from clamp_track.errors import InputError
    from clamp_track.models import create_model
    from clamp_track.skeleton import get_keypoint_set

    model = create_model(weights=args.weights)
    kp = model.keypoints
    if args.keypoints and get_keypoint_set(args.keypoints) != kp:
        raise InputError(f"{args.weights}: the weights predict keypoint set {kp.name!r}, not "
                         f"{args.keypoints!r}; leave out --keypoints")
    data = load_coco(args.data, args.images, kp, skip_bad=args.skip_bad)
    dataset = TopDownDataset(data.records, kp, model.config.input_size,
                             ground_truth=data.ground_truth)
    device = resolve_device(args.device)
    model.to(device)
    config = EvalConfig(flip_test=not args.no_flip, batch_size=args.batch_size)
    result = evaluate(model, dataset, config, device=device, workers=args.workers,
                      amp=args.fp16)
    if args.save_predictions:
        results = file_order_results(result.results, data.columns)
        atomic_write_text(args.save_predictions, json.dumps(results) + "\n")
    return result.metrics


def _eval_predictions(args) -> dict:
    import json
    from pathlib import Path

    from clamp_track.data.coco import read_json, resolve_keypoints
    from clamp_track.engine.evaluate import coco_metrics
    from clamp_track.errors import InputError

    gt = read_json(args.data)
    kp, columns = resolve_keypoints(gt["categories"], args.keypoints, Path(args.data))
    sigmas = list(kp.sigmas)
    if columns is not None:  # the results use the file's column order
        sigmas = [sigmas[columns.index(c)] for c in range(len(columns))]
    path = Path(args.predictions)
    if not path.is_file():
        raise InputError(f"{path}: results file not found")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: malformed JSON at line {exc.lineno} ({exc.msg})") from None
    if not isinstance(results, list):
        raise InputError(f"{path}: expected a list of COCO keypoint results")
    _check_results(results, gt, len(sigmas), path)
    return coco_metrics(gt, results, sigmas)


def _check_results(results: list, gt: dict, k: int, path) -> None:
    from clamp_track.errors import InputError

    images = {im.get("id") for im in gt["images"]}
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "keypoints", "score"} <= set(r):
            raise InputError(f"{path}: result {i} lacks image_id, keypoints or score")
        if len(r["keypoints"]) != 3 * k:
            raise InputError(f"{path}: result {i} has {len(r['keypoints'])} keypoint values, "
                             f"the annotation file has {k} keypoints x 3")
        if r["image_id"] not in images:
            raise InputError(f"{path}: result {i} is for image {r['image_id']}, which is not "
                             "in the annotation file")
        r.setdefault("category_id", 1)
