"""make eval-task — the Task agent's brain on the project's labelled requests (tests/task_eval/).

Prints decision accuracy, refusal rates on unethical and infeasible requests, false refusals on
harmless look-alikes, and field accuracy (task type, targets, constraints) for every learnable set present
(services/task/evaluation.py TASK_SETS: each was written before the change it first measured and scored
once at first contact) and all of them together. All of them are now in the review banks, the learned
heads and the task reader, so these figures are in-sample; scripts/build_review_bank.py --cv / --cv-zh /
--cv-head give leave-one-set-out figures. The sealed sets (SEALED_TASK_SETS) are never scored here:
``--sealed`` scores them, once, at the end of a piece of work. ``--semantic on|off`` and ``--zh on|off``
turn those layers on or off (default: their TRAINERAGENT_* settings). ``--brain llm`` asks the LLM brain (needs TRAINERAGENT_LLM_BASE_URL);
``--show-errors`` lists every mistake; ``--json`` prints one JSON object and nothing else.
Figures only: this script does not fail on them.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.task.evaluation import SEALED_TASK_SETS, TASK_SETS, evaluate, format_report, load_set, plan_with_rules  # noqa: E402

SET_DIR = ROOT / "tests" / "task_eval"
SETS = TASK_SETS


def _llm_plan():
    from services.common.config import Settings
    from services.common.jsonfmt import message_to_json
    from services.task.brain import read_request

    settings = Settings.from_env()
    if not settings.llm_base_url:
        raise SystemExit("--brain llm: no LLM endpoint configured (set TRAINERAGENT_LLM_BASE_URL)")

    def plan(text: str) -> dict:
        return message_to_json(read_request(text, settings, brain="llm"))

    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brain", choices=("rules", "llm"), default="rules")
    parser.add_argument("--show-errors", action="store_true", help="list every item with a mistake")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--set-dir", type=pathlib.Path, default=SET_DIR, help="folder of the .jsonl sets")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--only", choices=SETS, default=None,
                       help="score one set only (whoever tunes the rules uses --only tuning / tuning2)")
    which.add_argument("--file", type=pathlib.Path, action="append", default=None,
                       help="score this labelled .jsonl file instead (repeatable): a set not yet in the project, "
                            "scored at first contact, or a user's own set")
    which.add_argument("--sealed", action="store_true",
                       help="score the sealed never-seen sets instead (once, at the end of a piece of work)")
    parser.add_argument("--semantic", choices=("on", "off"), default=None,
                        help="the rule brain's semantic review layer on or off (default: the setting)")
    parser.add_argument("--zh", choices=("on", "off"), default=None,
                        help="the Chinese second opinion (services/task/zh_review.py) on or off")
    args = parser.parse_args(argv)

    if args.zh is not None:
        import os

        from services.task import zh_review

        os.environ[zh_review.ENV_SWITCH] = "1" if args.zh == "on" else "0"
    if args.semantic is not None:
        import os

        from services.task import semantic_review

        os.environ[semantic_review.ENV_SWITCH] = "1" if args.semantic == "on" else "0"
    plan = plan_with_rules if args.brain == "rules" else _llm_plan()
    names = SEALED_TASK_SETS if args.sealed else SETS
    paths = {name: args.set_dir / f"{name}.jsonl" for name in names}
    if args.file:
        missing = [str(path) for path in args.file if not path.is_file()]
        if missing:
            print(f"no such labelled file: {', '.join(missing)}", file=sys.stderr)
            return 2
        paths = {path.stem: path for path in args.file}
    present = [name for name in paths if paths[name].exists()]
    if not present:
        print("no sealed set at the moment: write one (blind to the code) before the next round of tuning"
              if args.sealed else f"no labelled set in {args.set_dir}")
        return 0
    halves = (args.only,) if args.only else tuple(present)
    sets = {name: load_set(paths[name]) for name in halves}
    if not args.only:
        sets["all"] = [item for name in halves for item in sets[name]]
    figures = {name: evaluate(items, plan) for name, items in sets.items()}

    if args.json:
        from services.task import semantic_review

        out = {"brain": args.brain, "semantic_review": semantic_review.enabled(), **figures}
        if not args.show_errors:
            for value in figures.values():  # ids and mistakes only; --show-errors for the whole items
                value["errors"] = [{"id": e["id"], "mistakes": e["mistakes"]} for e in value["errors"]]
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0

    from services.task import semantic_review

    print(f"Task agent evaluation, brain: {args.brain}, semantic review: {'on' if semantic_review.enabled() else 'off'}")
    for name in halves:
        print(format_report(name, figures[name], show_errors=args.show_errors))
    if not args.only:
        print(format_report("all", figures["all"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
