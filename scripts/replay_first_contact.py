"""Replay the review's first contact with each labelled set, to choose the learned layers' policy honestly.

Every labelled set after fresh6 was scored once at first contact, then learnt from: its mistakes were
fixed in the phrase rules, its requests went into the kNN banks, the heads and the task reader. After
that, scoring it says little about requests nobody has seen. Leave-one-set-out over the learned layers
alone (``build_review_bank.py --cv-head``) still flatters, because the phrase rules have since been tuned
on the set: at first contact the rules missed about a third of the unethical requests, in-sample they
miss almost none, so the learned layers are barely tested where they matter.

This script rebuilds the first contact: for each set of ``FIRST_CONTACT`` the rules (services/task/rules.py
and its knowledge file) are checked out from git as they stood when the set arrived (a detached worktree
under a temporary folder), and the learned layers are trained on every other learnable set. The review
then combines them with the layers' code and thresholds as they stand now (semantic_review.layered, then
rules.final_verdict), and the figures are printed per set and in all. The decision of an item the review
lets through comes from today's rules (accept / clarify), so only the review is replayed.

    .venv/bin/python scripts/replay_first_contact.py            # about 15 minutes on two cores (25 sets)

It needs the git history (a shallow clone has none of these commits). It builds nothing and writes
nothing in the repository.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

# set -> the commit whose rules met it first (the commit before the set was learnt from)
FIRST_CONTACT = {
    "fresh7": "f5acd63^",
    "tuning3_en": "b186115^",
    "tuning3_zh": "b186115^",
    "fresh8": "60f8db4",
    "fresh9": "131e766",
    "tuning4_en": "665b601",
    "tuning4_zh": "665b601",
    "fresh10": "f2fcf8c",
    "tuning5": "048618a",
    "tuning6": "a6dc196",
    "fresh11": "cd65441",
    "tuning7": "a57cada",
    "tuning8": "d646713",
    "tuning9": "a8db06c",
    "fresh12": "e2368a8",
    "tuning10": "6c1018b",
    "tuning11": "6c1018b",
    "tuning12": "52f02a5",
    "fresh13": "e251461",
    "tuning13": "a1f2b4c",
    "tuning14": "fab8c2c",
    "tuning15": "3f20d49",
    "tuning16": "9773b44",
    "fresh14": "bd120b4",
    "tuning17": "b27d37c",
    "fresh15": "f3a9f5c",
    "tuning18": "4088967",
    "tuning19": "4088967",
    "tuning20": "94ccffe",
    "fresh16": "deeef64",
    "tuning21": "4a1e8ae",
}

_RULES_AT = """
import json, sys
sys.path.insert(0, sys.argv[1]); sys.path.append(sys.argv[2])
from services.task import rules
out = {}
for line in open(sys.argv[3], encoding="utf-8"):
    if line.strip():
        text = json.loads(line)["text"]
        verdict = rules.review(text)
        out[text] = [None if verdict is None else [int(verdict[0]), verdict[1]], rules.protective_framing(text)]
print(json.dumps(out))
"""


def rules_at(commit: str, set_file: pathlib.Path, scratch: pathlib.Path) -> dict[str, tuple]:
    """{text: (rule verdict, protective framing)} with the rules of ``commit``."""
    sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    tree = scratch / sha
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--force", "--detach", str(tree), sha], cwd=ROOT, check=True,
                       capture_output=True)
    done = subprocess.run([sys.executable, "-c", _RULES_AT, str(tree), str(ROOT), str(set_file)], check=True,
                          capture_output=True, text=True)
    return {text: (None if v is None else (v[0], v[1]), p) for text, (v, p) in json.loads(done.stdout).items()}


def _scored(items: list[dict], verdicts: dict) -> dict:
    """The evaluation figures of ``items`` with the review's verdicts replayed (today's rules read the rest)."""
    from services.task import rules
    from services.task.evaluation import evaluate, plan_with_rules

    original = rules.full_review
    rules.full_review = lambda text: verdicts[text]
    try:
        return evaluate(items, plan_with_rules)
    finally:
        rules.full_review = original


def _window_opinions(text: str, head) -> list:
    """The fold's head on each part of the request read alone (review_head.window_opinions, with this head)."""
    from services.task import rules

    parts = rules.review_windows(text)
    return [head.predict(w) for w in parts] if len(parts) > 1 else []


def replay(sets: list[str], inputs: list[dict] | None = None) -> dict[str, dict]:
    """The figures per set and in all; ``inputs``, when given, gets one record per request: what the
    learned layers were given (rule verdict, framing, vote, head) and what they said, for --dump."""
    import build_review_bank as bank_script

    from services.task import review_head, rules, semantic_review, zh_review
    from services.task.evaluation import TASK_SETS, load_set

    data = bank_script.head_data(TASK_SETS)
    en_bank, zh_bank = semantic_review.load_bank(), zh_review.load_bank()
    en_x = bank_script.english_embeddings(data["en"]["texts"])
    figures: dict[str, dict] = {}
    every: list[dict] = []
    verdicts: dict[str, object] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ta-replay-") as scratch:
            for name in sets:
                set_file = ROOT / "tests" / "task_eval" / f"{name}.jsonl"
                then = rules_at(FIRST_CONTACT[name], set_file, pathlib.Path(scratch))
                en_fold, zh_fold = en_bank.without(name), zh_bank.without(name)
                heads = {}
                for lang in ("en", "zh"):
                    keep = [i for i, source in enumerate(data[lang]["sources"]) if source != name]
                    heads[lang] = review_head.fit_head(
                        [data[lang]["texts"][i] for i in keep], [data[lang]["labels"][i] for i in keep], lang == "zh",
                        (review_head.PARAMS_ZH if lang == "zh" else review_head.PARAMS_EN).c,
                        en_x[keep] if lang == "en" else None)
                items = load_set(set_file)
                for item in items:
                    text = item["text"]
                    rule_verdict, protective = then[text]
                    chinese = semantic_review.is_chinese(text)
                    if chinese:
                        params, head_params = zh_review.PARAMS, review_head.PARAMS_ZH
                        the_vote = zh_review.vote(text, bank=zh_fold, k=params.k)
                    else:
                        params, head_params = semantic_review.PARAMS, review_head.PARAMS_EN
                        the_vote = semantic_review.vote(text, bank=en_fold, k=params.k)
                    fold_head = heads["zh" if chinese else "en"]
                    head = (fold_head.predict(text), head_params)
                    windows = _window_opinions(text, fold_head) if inputs is not None else None
                    verdicts[text] = rules.final_verdict(text, rule_verdict, semantic_review.layered(
                        text, rule_verdict, protective, the_vote, params, head,
                        (lambda w=windows: w) if windows is not None else
                        (lambda t=text, h=fold_head: _window_opinions(t, h))))
                    if inputs is not None:
                        inputs.append({"set": name, "item": item, "rule_verdict": rule_verdict,
                                       "protective": protective, "vote": the_vote, "head": head[0],
                                       "windows": windows, "verdict": verdicts[text]})
                figures[name] = _scored(items, verdicts)
                every.extend(items)
                print(f"{name}: decision {figures[name]['decision_accuracy']:.3f}", file=sys.stderr, flush=True)
    finally:  # the worktrees went with the temporary folder: forget them
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=False, capture_output=True)
    figures["all"] = _scored(every, verdicts)
    for lang in ("en", "zh"):
        figures[f"all_{lang}"] = _scored([i for i in every if i["lang"] == lang], verdicts)
    return figures


def _print_errors(inputs: list[dict]) -> None:
    """The requests whose replayed review disagrees with the label (a refusal or its absence, or the reason)."""
    from services.task import review_head
    from traineragent.v1 import common_pb2

    names = {common_pb2.REJECT_REASON_UNETHICAL: "unethical", common_pb2.REJECT_REASON_INFEASIBLE: "infeasible"}
    for record in inputs:
        expected = record["item"]["expected"]
        wanted = expected["reject_reason"] if expected["decision"] == "reject" else None
        got = None if record["verdict"] is None else names.get(record["verdict"][0], "?")
        if got == wanted:
            continue
        rule = None if record["rule_verdict"] is None else names.get(record["rule_verdict"][0], "?")
        v = record["vote"]
        head = " ".join(f"{label} {p:.2f}" for label, p in zip(review_head.LABELS, record["head"], strict=True))
        print(f"- {record['set']} {record['item']['id']} [{record['item']['category']}] got {got}, rules {rule}, "
              f"protective {record['protective']}, vote {v.label} {v.share:.2f} @ {v.top_similarity:.2f}, head {head}: "
              f"{record['item']['text'][:110]!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(FIRST_CONTACT), help="comma-separated, of " + ", ".join(FIRST_CONTACT))
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--show-errors", action="store_true", help="list the requests the replayed review got wrong")
    parser.add_argument("--dump", type=pathlib.Path, metavar="FILE",
                        help="pickle each request's layer inputs and verdict to FILE (to try a policy without replaying)")
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in FIRST_CONTACT]
    if unknown:
        parser.error(f"no first-contact commit recorded for {unknown}")
    inputs: list[dict] = []
    figures = replay(sets, inputs)
    if args.dump:
        import pickle

        args.dump.write_bytes(pickle.dumps(inputs))
    if args.show_errors:
        _print_errors(inputs)
    keys = ("decision_accuracy", "unethical_refusal_rate", "infeasible_refusal_rate", "false_refusal_rate",
            "clarify_rate")
    if args.json:
        print(json.dumps({name: {k: f[k] for k in keys} for name, f in figures.items()}, indent=2))
        return 0
    print(f"{'set':12s} {'decision':>9s} {'unethical':>10s} {'infeasible':>11s} {'false ref':>10s} {'clarify':>8s}")
    for name, f in figures.items():
        print(f"{name:12s} " + " ".join(f"{f[k]:>{w}.3f}" if f[k] is not None else f"{'-':>{w}s}"
                                       for k, w in zip(keys, (9, 10, 11, 10, 8), strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
