"""Does a Chapter-3 model score alike with the prompt form it was trained on and the one the tables use?

Training passes each phrase through a random CLIPSeg template ("a photo of a {}.", ...; `prompt_mode: random`,
as the released LD-ZNet code does, which also validates that way); the test protocol passes the raw phrase
(`prompt_mode: raw`, CLIPSeg's scoring; docs/protocols.md §5), and so, since this finding, does the demo's
validation (experiments/demo/ldznet.yaml). This scores every trained model of a demo run
folder (and the image-only floor, which ignores the prompt: its two scores must be equal) on the same
PhraseCut-layout phrases both ways, through the evaluation code of the tables (ldznet.eval). Evidence for
docs/demo-study-notes.md, "Chapter 3 at 2.5x the length".

    python -m demo.prompt_forms RUN [RUN ...] [--split val]
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from common.config import load_config
from common.resilience import SeededSamples
from demo.data_overrides import ldznet_data_overrides
from demo.plan import DEMO_EXPERIMENTS
from demo.stages import read_marker

PROMPT_FORMS = {"templated": "random", "raw": "raw"}  # label -> PhraseCut prompt_mode


def trained_segmenters(run: Path) -> list[tuple[str, str, str]]:
    """(stage, part, segmenter path) of every finished Chapter-3 training part of `run`, as its stage markers
    (`<stage>/DONE.json`, demo.stages) record them: ldznet_train's (seed, model) parts, then the image-only
    floor's seeds."""
    found = []
    for stage in ("ldznet_train", "floor_image_only"):
        marker = read_marker(run / stage / "DONE.json")
        if marker is None:
            raise FileNotFoundError(f"{run / stage / 'DONE.json'}: stage {stage} has not finished in {run}")
        result = marker["result"]
        parts = result["parts"] if stage == "ldznet_train" else {f"seed{seed}": entry
                                                                 for seed, entry in result["seeds"].items()}
        found += [(stage, part, entry["segmenter"]) for part, entry in sorted(parts.items())]
    return found


def prompt_form_loaders(run: Path, split: str = "val", batch_size: int = 16) -> dict[str, DataLoader]:
    """The PhraseCut-layout `split` of the run's shape world, as the tables read it, once per prompt form."""
    from ldznet.data import build_dataset
    from ldznet.pipeline import evaluation_nodes

    world, ldm = run / "world_shapes", run / "tiny_ldm" / "stable_diffusion"
    cfg = load_config(DEMO_EXPERIMENTS / "ldznet.yaml", ldznet_data_overrides(world, ldm))
    node = evaluation_nodes(cfg)["phrasecut"]
    loaders = {}
    for label, mode in PROMPT_FORMS.items():
        # item i drawn with torch seeded by (0, i): phrase i gets the same random template in every run
        dataset = SeededSamples(build_dataset(OmegaConf.merge(node, {"split": split, "prompt_mode": mode})), 0)
        loaders[label] = DataLoader(dataset, batch_size=batch_size, sampler=[(i, i) for i in range(len(dataset))],
                                    num_workers=0)
    return loaders


def score_prompt_forms(run: str | Path, split: str = "val") -> list[dict]:
    """One row per trained part of `run` (ldznet_train seeds x models, then floor_image_only seeds):
    {"stage", "part", "segmenter", "<form>": {"miou_best", "ap"} for each prompt form}."""
    from demo.floors import PromptBlind
    from ldznet.checkpoints import load_segmenter
    from ldznet.eval import evaluate_segmenter

    run = Path(run)
    loaders = prompt_form_loaders(run, split)
    rows = []
    for stage, part, segmenter in trained_segmenters(run):
        model = load_segmenter(segmenter, device="cpu", task="phrasecut",
                               stable_diffusion_path=str(run / "tiny_ldm" / "stable_diffusion"))
        if stage == "floor_image_only":
            model = PromptBlind(model)
        row = {"stage": stage, "part": part, "segmenter": segmenter}
        for label, loader in loaders.items():
            metrics = evaluate_segmenter(model, loader, progress=False)
            row[label] = {"miou_best": float(metrics["miou_best"]), "ap": float(metrics["ap"])}
        rows.append(row)
        del model
        gc.collect()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.prompt_forms", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="demo run folders (e.g. runs/demo-study)")
    parser.add_argument("--split", default="val", help="PhraseCut-layout split to score (default val)")
    args = parser.parse_args(argv)
    print("| run | part | templated mIoU | templated AP | raw mIoU | raw AP |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        for row in score_prompt_forms(run, args.split):
            templated, raw = row["templated"], row["raw"]
            print(f"| {run} | {row['part']}{' (image-only floor)' if row['stage'] == 'floor_image_only' else ''} "
                  f"| {templated['miou_best']:.1f} | {templated['ap']:.1f} | {raw['miou_best']:.1f} | "
                  f"{raw['ap']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
