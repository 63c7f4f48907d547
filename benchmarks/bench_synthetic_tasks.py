"""What the synthetic downstream tasks give away: trivial baselines against a frozen random-init probe.

On the fine-tuning scenes (the demo's difficulty: 1–2 objects, background at half strength), val split:
- depth (``--num-val`` scenes): the per-pixel mean of the ``--num-train`` training depth maps; each image's
  median depth (oracle); a per-token ridge probe of log-depth (:mod:`mimlens.tasks.probes.ridge`, λ chosen on the
  last 20 % of the training scenes) on every block of a random-init ``vit-tiny-64`` (sin-cos position
  embedding, as the demo), the best block by RMSE. Metrics of :func:`mimlens.tasks.depth.per_image_metrics`
  (per image, then the mean over images): RMSE (m), RMSE of log-depth, AbsRel and SILog (scale-invariant
  log error ×100);
- pose: COCO OKS AP (sigma 0.067 per keypoint) of the training instances' mean box-normalised keypoints
  placed in each ground-truth box (:mod:`mimlens.tasks.baselines`);
- tracking (``--num-val`` sequences of 16 frames): LaSOT SUC of the zero-motion tracker (the first box
  held), and of two training-free colour-template trackers that slide the first frame's box of pixels over
  each frame (least summed squared difference) and keep its size: over the whole frame (appearance alone)
  and within ``--reach`` pixels of the previous box (appearance plus a motion prior).

    python benchmarks/bench_synthetic_tasks.py
    python benchmarks/bench_synthetic_tasks.py --num-train 512 --num-val 128
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

DIFFICULTY = {"num_objects": (1, 2), "background_strength": 0.5}
MIN_DEPTH, MAX_DEPTH = 1e-3, 10.0


def depth_rows(num_train: int, num_val: int, seed: int) -> dict[str, dict[str, float]]:
    from mimlens.data.synthetic import SyntheticScenes
    from mimlens.models import build_model, preprocessing
    from mimlens.tasks.depth import METRICS, per_image_metrics
    from mimlens.tasks.images import normalize
    from mimlens.tasks.probes.layerwise import block_maps
    from mimlens.tasks.probes.ridge import RidgeSums, select_ridge

    train = SyntheticScenes(num_train, 64, seed, split="train", **DIFFICULTY)
    val = SyntheticScenes(num_val, 64, seed, split="val", **DIFFICULTY)
    train_items, val_items = [train[i] for i in range(num_train)], [val[i] for i in range(num_val)]
    gt = torch.stack([item["depth"][0] for item in val_items]).double()

    def scores(pred: torch.Tensor) -> dict[str, float]:
        valid = (gt > MIN_DEPTH) & (gt < MAX_DEPTH)
        metrics, _ = per_image_metrics(pred.clamp(MIN_DEPTH, MAX_DEPTH), gt, valid)
        mean = metrics.mean(0)
        return {name: float(mean[METRICS.index(name)]) for name in ("rmse", "rmse_log", "abs_rel", "silog")}

    rows = {}
    mean_map = torch.stack([item["depth"][0] for item in train_items]).double().mean(0)
    rows["training mean depth map"] = scores(mean_map.expand_as(gt))
    median = gt.flatten(1).median(1).values[:, None, None]
    rows["per-image constant (ground-truth median)"] = scores(median.expand_as(gt))

    torch.manual_seed(seed)
    model = build_model("vit-tiny-64", pos_embed="sincos", seed=seed)
    prep = preprocessing(model)
    held = round(0.2 * num_train)
    with block_maps(model) as maps:
        def features(items):
            images = torch.stack([normalize(item["image"], prep["mean"], prep["std"]) for item in items])
            return maps(images)

        def targets(items, grid):
            depth = torch.stack([item["depth"] for item in items]).double()
            return F.adaptive_avg_pool2d(torch.log(depth), grid).flatten(1)  # (B, h·w) mean log-depth per token

        sums: dict[int, list] = {}
        for start in range(0, num_train, 64):
            batch = train_items[start:start + 64]
            is_held = torch.tensor([start + i >= num_train - held for i in range(len(batch))])
            for block, fmap in features(batch).items():
                y = targets(batch, fmap.shape[1:3])
                part = sums.setdefault(block, [RidgeSums(fmap.shape[-1], 1), RidgeSums(fmap.shape[-1], 1)])
                for rows_of, acc in ((~is_held, part[0]), (is_held, part[1])):
                    if rows_of.any():
                        acc.update(fmap[rows_of].flatten(0, 2), y[rows_of].flatten()[:, None])
        fits = {block: select_ridge(*part)[0] for block, part in sums.items()}
        preds: dict[int, list] = {block: [] for block in fits}
        for start in range(0, num_val, 64):
            for block, fmap in features(val_items[start:start + 64]).items():
                token_map = fits[block].predict(fmap.flatten(0, 2)).view(*fmap.shape[:3])[:, None]
                preds[block].append(torch.exp(F.interpolate(token_map, size=gt.shape[-2:], mode="bilinear",
                                                            align_corners=False))[:, 0])
    per_block = {block: scores(torch.cat(p)) for block, p in preds.items()}
    best = min(per_block, key=lambda b: per_block[b]["rmse"])
    rows[f"random-init vit-tiny-64, per-token ridge of log-depth (best block {best + 1} of {len(per_block)})"] = (
        per_block[best])
    return rows


def pose_rows(num_train: int, num_val: int, seed: int) -> dict[str, dict[str, float]]:
    from mimlens.data.synthetic import SyntheticScenes
    from mimlens.tasks.baselines import keypoint_template, template_results
    from mimlens.tasks.datasets import synthetic_keypoints_coco
    from mimlens.tasks.pose import coco_keypoint_eval_images

    train = synthetic_keypoints_coco(SyntheticScenes(num_train, 64, seed, split="train", **DIFFICULTY))
    val = synthetic_keypoints_coco(SyntheticScenes(num_val, 64, seed, split="val", **DIFFICULTY))
    train_anns, val_anns = train.loadAnns(train.getAnnIds()), val.loadAnns(val.getAnnIds())
    num_keypoints = len(train.loadCats(1)[0]["keypoints"])
    template = keypoint_template(train_anns, num_keypoints)
    metrics, _ = coco_keypoint_eval_images(val, template_results(template, val_anns))
    labelled = sum(ann["num_keypoints"] for ann in val_anns) / len(val_anns)
    return {"mean keypoint template in the ground-truth box": {"ap": metrics["ap"], "labelled": labelled}}


def template_track(frames: torch.Tensor, first: torch.Tensor, reach: float | None) -> torch.Tensor:
    """(T, 4) boxes of the colour-template tracker: least squared difference to frame 0's box of pixels."""
    x, y, w, h = (round(float(v)) for v in first)
    w, h = max(w, 1), max(h, 1)
    template = frames[0, :, y:y + h, x:x + w]
    h, w = template.shape[-2:]
    out, previous = [first.double()], (x, y)
    for frame in frames[1:]:
        cross = F.conv2d(frame[None], template[None])[0, 0]
        energy = F.avg_pool2d((frame**2).sum(0)[None, None], (h, w), stride=1, divisor_override=1)[0, 0]
        cost = energy - 2 * cross
        if reach is not None:
            rows = torch.arange(cost.shape[0], dtype=torch.float64)[:, None] - previous[1]
            cols = torch.arange(cost.shape[1], dtype=torch.float64)[None, :] - previous[0]
            cost = torch.where(rows**2 + cols**2 <= reach**2, cost, torch.inf)
        index = int(cost.flatten().argmin())
        previous = (index % cost.shape[1], index // cost.shape[1])
        out.append(torch.tensor([*previous, w, h], dtype=torch.float64))
    return torch.stack(out)


def tracking_rows(num_val: int, seed: int, reach: float) -> dict[str, dict[str, float]]:
    from mimlens.data.synthetic import SyntheticSequences
    from mimlens.tasks.baselines import zero_motion
    from mimlens.tasks.tracking import sequence_curves

    data = SyntheticSequences(num_val, 16, 64, seed, split="val", **DIFFICULTY)
    trackers = {"zero motion (first box held)": lambda item: zero_motion(item["boxes"]),
                "colour template, whole frame": lambda item: template_track(item["frames"], item["boxes"][0], None),
                f"colour template, within {reach:g} px of the last box":
                    lambda item: template_track(item["frames"], item["boxes"][0], reach)}
    suc: dict[str, list[tuple[float, bool]]] = {name: [] for name in trackers}
    for i in range(num_val):
        item = data[i]
        visible = ~(item["full_occlusion"] | item["out_of_view"])
        twin = bool(item.get("twin", torch.tensor(False)))
        for name, track in trackers.items():
            success, _, _ = sequence_curves(track(item), item["boxes"].double(), visible)
            suc[name].append((float(success.mean()), twin))
    rows = {}
    for name, values in suc.items():
        twins = [s for s, t in values if t]
        rows[name] = {"suc": sum(s for s, _ in values) / len(values),
                      "suc_twin": sum(twins) / len(twins) if twins else float("nan"), "twins": len(twins)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-train", type=int, default=1024, help="training scenes (default 1024)")
    parser.add_argument("--num-val", type=int, default=256, help="validation scenes and sequences (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reach", type=float, default=8.0, help="search radius of the local colour template (px)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()

    print(f"depth ({args.num_val} val scenes, {args.num_train} train)   RMSE m   RMSE log   AbsRel   SILog")
    for name, m in depth_rows(args.num_train, args.num_val, args.seed).items():
        print(f"  {name:<82} {m['rmse']:.3f}   {m['rmse_log']:.3f}   {m['abs_rel']:.3f}   {m['silog']:5.1f}")
    print(f"pose ({args.num_val} val scenes)   OKS AP   labelled keypoints per instance")
    for name, m in pose_rows(args.num_train, args.num_val, args.seed).items():
        print(f"  {name:<82} {m['ap']:.3f}   {m['labelled']:.2f}")
    print(f"tracking ({args.num_val} val sequences of 16 frames)   SUC   SUC on sequences with a twin (count)")
    for name, m in tracking_rows(args.num_val, args.seed, args.reach).items():
        print(f"  {name:<82} {m['suc']:.3f}   {m['suc_twin']:.3f} ({m['twins']})")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
