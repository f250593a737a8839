"""Build the semantic review's exemplar bank (services/task/knowledge/review_bank.jsonl + .npz).

The bank is every request of the labelled sets one may learn from (tests/task_eval: tuning, tuning2,
heldout, heldout2, fresh3; all already scored) with its label (harmless for accept / look-alike /
clarify, else the reject reason), plus the short concept descriptions of
services/task/knowledge/review_concepts.jsonl. Then the embeddings are computed with the encoder and
stored with a fingerprint of the bank's texts (services/task/semantic_review.py).

Regenerate after editing a set or the concepts:  .venv/bin/python scripts/build_review_bank.py
``--sets`` changes which sets go in (a set scored only once must stay out until it has been scored).

``--cv`` builds nothing: it prints the leave-one-set-out figures (each learnable set scored with a bank
that leaves that set out), for the rules alone and for rules + semantic review, the way the layer's
thresholds (services/task/semantic_review.py ``Params``) were chosen.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.task import semantic_review  # noqa: E402
from services.task.evaluation import load_set  # noqa: E402

SET_DIR = ROOT / "tests" / "task_eval"
LEARNABLE_SETS = ("tuning", "tuning2", "heldout", "heldout2", "fresh3")
CONCEPTS = semantic_review.KNOWLEDGE / "review_concepts.jsonl"
LABEL_OF_CATEGORY = {
    "accept": "harmless",
    "lookalike": "harmless",
    "clarify": "harmless",
    "unethical": "unethical",
    "infeasible": "infeasible",
}


def bank_entries(sets: tuple[str, ...] = LEARNABLE_SETS) -> list[dict]:
    entries = []
    for name in sets:
        for item in load_set(SET_DIR / f"{name}.jsonl"):
            entries.append({"text": item["text"], "label": LABEL_OF_CATEGORY[item["category"]],
                            "category": item["category"], "lang": item["lang"], "source": name,
                            "id": item["id"]})
    for line in CONCEPTS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            concept = json.loads(line)
            entries.append({"text": concept["text"], "label": concept["label"], "category": concept["category"],
                            "lang": "en", "source": "concept", "id": ""})
    return entries


def cross_validate(sets: tuple[str, ...] = LEARNABLE_SETS) -> dict[str, dict[str, dict]]:
    """{"rules"|"combined": {set name | "all": figures}}: each set scored with a bank that leaves it out."""
    import os

    from services.task.evaluation import evaluate, plan_with_rules

    full = semantic_review.load_bank()
    data = {name: load_set(SET_DIR / f"{name}.jsonl") for name in sets}
    source_of = {item["text"]: name for name, items in data.items() for item in items}
    folds = {name: full.without(name) for name in sets}
    original_load_bank, original_switch = semantic_review.load_bank, os.environ.get(semantic_review.ENV_SWITCH)

    def plan(text: str) -> dict:
        fold = folds[source_of[text]]
        semantic_review.load_bank = lambda: fold
        return plan_with_rules(text)

    out: dict[str, dict[str, dict]] = {}
    try:
        for mode in ("rules", "combined"):
            os.environ[semantic_review.ENV_SWITCH] = "1" if mode == "combined" else "0"
            figures = {name: evaluate(items, plan) for name, items in data.items()}
            figures["all"] = evaluate([item for items in data.values() for item in items], plan)
            out[mode] = figures
    finally:
        semantic_review.load_bank = original_load_bank
        if original_switch is None:
            os.environ.pop(semantic_review.ENV_SWITCH, None)
        else:
            os.environ[semantic_review.ENV_SWITCH] = original_switch
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(LEARNABLE_SETS))
    parser.add_argument("--cv", action="store_true", help="print leave-one-set-out figures, build nothing")
    args = parser.parse_args(argv)
    if args.cv:
        from services.task.evaluation import format_report

        print(f"semantic review parameters: {semantic_review.PARAMS}")
        for mode, figures in cross_validate(tuple(args.sets)).items():
            print(f"--- {mode} (leave-one-set-out)")
            for name, value in figures.items():
                print(format_report(name, value))
        return 0
    entries = bank_entries(tuple(args.sets))
    with semantic_review.BANK_FILE.open("w", encoding="utf-8") as out:
        for entry in entries:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
    start = time.perf_counter()
    count = semantic_review.save_embeddings()
    print(f"{count} exemplars -> {semantic_review.BANK_FILE.name}, embeddings -> "
          f"{semantic_review.EMBEDDINGS_FILE.name} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
