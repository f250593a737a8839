"""Build the semantic review's exemplar bank (services/task/knowledge/review_bank.jsonl + .npz).

The bank is every request of the labelled sets one may learn from (``TASK_SETS``: every scored set
of tests/task_eval, services/task/evaluation.py; sealed sets stay out) with its label (harmless for accept / look-alike /
clarify, else the reject reason), plus the short concept descriptions of
services/task/knowledge/review_concepts.jsonl. Then the embeddings are computed with the encoder and
stored with a fingerprint of the bank's texts (services/task/semantic_review.py).

Regenerate after editing a set or the concepts:  .venv/bin/python scripts/build_review_bank.py
``--sets`` changes which sets go in (a set scored only once must stay out until it has been scored).

``--cv`` builds nothing: it prints the leave-one-set-out figures (each learnable set scored with a bank
that leaves that set out), for the rules alone and for rules + semantic review, the way the layer's
thresholds (services/task/semantic_review.py ``Params``) were chosen.

The Chinese opinion (services/task/zh_review.py) has its own bank, review_bank_zh.jsonl: the Chinese
items of the learnable sets, plus knowledge/review_concepts_zh.jsonl (written on every build;
``--zh-only`` writes only it, without the encoder). ``--cv-zh`` prints leave-one-set-out figures over the
Chinese items for a grid of its thresholds (zh_review ``PARAMS`` is a middle member of the best tie).

The supervised head (services/task/review_head.py): logistic regression per language over every scored
set (``TASK_SETS``) plus the concepts, stored in knowledge/review_head.npz; written on every full build
(``--head`` writes only it). ``--cv-head`` prints leave-one-set-out figures over ``TASK_SETS`` for the
rules alone, the rules + kNN layers as shipped, and the head's grid (C, mode, add_p, clear_p), chosen per
language by decision accuracy, then unethical and infeasible refusal, then fewer false refusals.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.task import review_head, semantic_review, zh_review  # noqa: E402
from services.task.evaluation import TASK_SETS, load_set  # noqa: E402

SET_DIR = ROOT / "tests" / "task_eval"
CONCEPTS = semantic_review.KNOWLEDGE / "review_concepts.jsonl"
LABEL_OF_CATEGORY = {
    "accept": "harmless",
    "lookalike": "harmless",
    "clarify": "harmless",
    "unethical": "unethical",
    "infeasible": "infeasible",
}


def bank_entries(sets: tuple[str, ...] = TASK_SETS) -> list[dict]:
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


def zh_bank_entries(sets: tuple[str, ...] = TASK_SETS) -> list[dict]:
    """The Chinese items of the sets, then the Chinese concept descriptions (zh_review's bank)."""
    entries = []
    for name in sets:
        for item in load_set(SET_DIR / f"{name}.jsonl"):
            if item["lang"] == "zh":
                entries.append({"text": item["text"], "label": LABEL_OF_CATEGORY[item["category"]],
                                "category": item["category"], "source": name, "id": item["id"]})
    for line in zh_review.CONCEPTS_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            concept = json.loads(line)
            entries.append({"text": concept["text"], "label": concept["label"], "category": concept["category"],
                            "source": "concept", "id": ""})
    return entries


def write_zh_bank(sets: tuple[str, ...] = TASK_SETS) -> int:
    entries = zh_bank_entries(sets)
    with zh_review.BANK_FILE.open("w", encoding="utf-8") as out:
        for entry in entries:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return len(entries)


ZH_GRID = {"k": (3, 5, 7, 9), "familiar": (0.15, 0.2, 0.25, 0.3, 0.35, 0.4),
           "add_share": (0.6, 0.7, 0.8, 0.9), "clear_share": (0.6, 0.7, 0.8, 0.9)}


def cross_validate_zh(sets: tuple[str, ...] = TASK_SETS, grid: dict | None = None) -> dict:
    """Leave-one-set-out over the Chinese items: the rules alone, and rules + zh opinion for every
    parameter combination of ``grid``; the best one (decision accuracy, then unethical and infeasible
    refusal, then fewer false refusals, then the plainer setting) with its figures."""
    import itertools
    import os

    from services.task.evaluation import evaluate, plan_with_rules

    grid = grid or ZH_GRID
    entries = zh_bank_entries(sets)
    full = zh_review.Bank(tuple(e["text"] for e in entries), tuple(e["label"] for e in entries),
                          tuple(e["source"] for e in entries))
    folds = {name: full.without(name) for name in sets}
    items = [item for name in sets for item in load_set(SET_DIR / f"{name}.jsonl") if item["lang"] == "zh"]
    source_of = {item["text"]: name for name in sets
                 for item in load_set(SET_DIR / f"{name}.jsonl") if item["lang"] == "zh"}
    saved = (zh_review.load_bank, zh_review.PARAMS, os.environ.get(semantic_review.ENV_SWITCH),
             os.environ.get(zh_review.ENV_SWITCH))

    def plan(text: str) -> dict:
        zh_review.load_bank = lambda: folds[source_of[text]]
        return plan_with_rules(text)

    out: dict = {"n": len(items)}
    try:
        os.environ[semantic_review.ENV_SWITCH] = "1"
        os.environ[zh_review.ENV_SWITCH] = "0"
        out["rules"] = evaluate(items, plan)
        os.environ[zh_review.ENV_SWITCH] = "1"
        results = []
        for k, familiar, add, clear in itertools.product(*(grid[key] for key in ZH_GRID)):
            zh_review.PARAMS = semantic_review.Params(k=k, familiar=familiar, add_share=add, clear_share=clear,
                                                      chinese=True)
            figures = evaluate(items, plan)
            key = (round(figures["decision_accuracy"], 6), figures["unethical_refusal_rate"],
                   figures["infeasible_refusal_rate"], -figures["false_refusal_rate"], familiar, add, clear, -k)
            results.append((key, zh_review.PARAMS, figures))
        results.sort(key=lambda r: r[0], reverse=True)
        out["best_params"], out["combined"] = results[0][1], results[0][2]
        out["top"] = [(r[1], r[2]) for r in results[:10]]
    finally:
        zh_review.load_bank, zh_review.PARAMS = saved[0], saved[1]
        for name, value in ((semantic_review.ENV_SWITCH, saved[2]), (zh_review.ENV_SWITCH, saved[3])):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return out


HEAD_GRID = {"c": (2.0, 8.0, 32.0, 128.0), "mode": ("replace", "union"),
             "add_p": (0.4, 0.5, 0.6, 0.7, 0.8, 0.9), "clear_p": (0.5, 0.7, 0.9, 1.01)}


def head_data(sets: tuple[str, ...] = TASK_SETS) -> dict[str, dict[str, list]]:
    """Per language ("en", "zh"): texts, labels, sources of the sets' items and the concepts."""
    out: dict[str, dict[str, list]] = {lang: {"texts": [], "labels": [], "sources": []} for lang in ("en", "zh")}
    for name in sets:
        for item in load_set(SET_DIR / f"{name}.jsonl"):
            lang = "zh" if semantic_review.is_chinese(item["text"]) else "en"
            out[lang]["texts"].append(item["text"])
            out[lang]["labels"].append(LABEL_OF_CATEGORY[item["category"]])
            out[lang]["sources"].append(name)
    for lang, path in (("en", CONCEPTS), ("zh", zh_review.CONCEPTS_FILE)):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                concept = json.loads(line)
                out[lang]["texts"].append(concept["text"])
                out[lang]["labels"].append(concept["label"])
                out[lang]["sources"].append("concept")
    return out


def english_embeddings(texts: list[str]) -> np.ndarray:
    """MiniLM embeddings: the stored bank's where the text is in it, else computed (deterministic)."""
    bank = semantic_review.load_bank()
    stored = {t: bank.embeddings[i] for i, t in enumerate(bank.texts)}
    return np.stack([stored[t] if t in stored else semantic_review._embedding(t) for t in texts]).astype(np.float64)


def build_heads(sets: tuple[str, ...] = TASK_SETS) -> dict[str, review_head.Head]:
    data = head_data(sets)
    en, zh = data["en"], data["zh"]
    heads = {
        "en": review_head.fit_head(en["texts"], en["labels"], False, review_head.PARAMS_EN.c,
                                   english_embeddings(en["texts"])),
        "zh": review_head.fit_head(zh["texts"], zh["labels"], True, review_head.PARAMS_ZH.c),
    }
    return heads


def write_heads(sets: tuple[str, ...] = TASK_SETS) -> dict[str, review_head.Head]:
    heads = build_heads(sets)
    data = head_data(sets)
    review_head.save_heads(heads["en"], heads["zh"],
                           en=review_head.fingerprint(data["en"]["texts"], data["en"]["labels"]),
                           zh=review_head.fingerprint(data["zh"]["texts"], data["zh"]["labels"]))
    return heads


def _verdict_key(verdict) -> int | None:
    return None if verdict is None else int(verdict[0])


def cross_validate_head(sets: tuple[str, ...] = TASK_SETS, grid: dict | None = None) -> dict:
    """Leave-one-set-out over ``sets``: each set's items reviewed by kNN banks and heads that leave it out.

    Returns {"rules", "knn", "head": figures over all items, "by_set": {name: {mode: figures}},
    "best": {"en"|"zh": (HeadParams, figures on that language)}, "top": {...}}."""
    import itertools

    from services.task import rules
    from services.task.evaluation import evaluate, plan_with_rules

    grid = grid or HEAD_GRID
    data = head_data(sets)
    items = {name: load_set(SET_DIR / f"{name}.jsonl") for name in sets}
    en_bank, zh_bank = semantic_review.load_bank(), zh_review.load_bank()
    en_x = english_embeddings(data["en"]["texts"])

    # per item: the rules' verdict, protective framing, the shipped kNN verdict (its fold), head probabilities
    info: dict[str, dict] = {}
    probs: dict[tuple[float, str], np.ndarray] = {}
    for name in sets:
        en_fold, zh_fold = en_bank.without(name), zh_bank.without(name)
        heads = {}
        for c in grid["c"]:
            for lang in ("en", "zh"):
                keep = [i for i, s in enumerate(data[lang]["sources"]) if s != name]
                texts = [data[lang]["texts"][i] for i in keep]
                labels = [data[lang]["labels"][i] for i in keep]
                heads[(c, lang)] = review_head.fit_head(texts, labels, lang == "zh", c,
                                                        en_x[keep] if lang == "en" else None)
        for item in items[name]:
            text = item["text"]
            chinese = semantic_review.is_chinese(text)
            rule_verdict, protective = rules.review_inputs(text)
            if chinese:
                the_vote = zh_review.vote(text, bank=zh_fold)
                knn = zh_review.combine(text, rule_verdict, the_vote, protective, zh_review.PARAMS)
            else:
                the_vote = semantic_review.vote(text, bank=en_fold)
                knn = semantic_review.combine(text, rule_verdict, the_vote, protective)
            info[text] = {"rule": rule_verdict, "protective": protective, "knn": knn, "lang": "zh" if chinese else "en",
                          "vote": the_vote}
            for c in grid["c"]:
                probs[(c, text)] = heads[(c, info[text]["lang"])].predict(text)

    plans: dict[tuple[str, int | None], dict] = {}
    original = rules.full_review

    def planned(text: str, verdict) -> dict:
        key = (text, _verdict_key(verdict))
        if key not in plans:
            rules.full_review = lambda _t: verdict
            try:
                plans[key] = plan_with_rules(text)
            finally:
                rules.full_review = original
        return plans[key]

    def figures_for(subset: list[dict], choose) -> dict:
        return evaluate(subset, lambda text: planned(text, choose(text)))

    def head_choice(params_of):
        def choose(text):
            i = info[text]
            params = params_of(i["lang"])
            return review_head.combine(i["rule"], i["knn"], probs[(params.c, text)], i["protective"], params,
                                       i["vote"])
        return choose

    every = [item for name in sets for item in items[name]]
    by_lang = {lang: [it for it in every if info[it["text"]]["lang"] == lang] for lang in ("en", "zh")}
    best, top = {}, {}
    for lang in ("en", "zh"):
        results = []
        for c, mode, add, clear in itertools.product(*(grid[key] for key in HEAD_GRID)):
            params = review_head.HeadParams(mode=mode, add_p=add, clear_p=clear, c=c)
            fig = figures_for(by_lang[lang], head_choice(lambda _l, p=params: p))
            key = (round(fig["decision_accuracy"], 6), fig["unethical_refusal_rate"], fig["infeasible_refusal_rate"],
                   -fig["false_refusal_rate"], mode == "union", add, clear, -abs(np.log(c)))
            results.append((key, params, fig))
        results.sort(key=lambda r: r[0], reverse=True)
        best[lang] = (results[0][1], results[0][2])
        top[lang] = [(r[1], r[2]) for r in results[:8]]
        best[lang + "_knn"] = figures_for(by_lang[lang], lambda t: info[t]["knn"])
    chosen = {lang: best[lang][0] for lang in ("en", "zh")}
    modes = {"rules": lambda t: info[t]["rule"], "knn": lambda t: info[t]["knn"],
             "head": head_choice(lambda lang: chosen[lang])}
    out = {mode: figures_for(every, fn) for mode, fn in modes.items()}
    out["by_set"] = {name: {mode: figures_for(items[name], fn) for mode, fn in modes.items()} for name in sets}
    out["best"], out["top"] = best, top
    return out


def cross_validate(sets: tuple[str, ...] = TASK_SETS) -> dict[str, dict[str, dict]]:
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
    parser.add_argument("--sets", nargs="+", default=list(TASK_SETS))
    parser.add_argument("--cv", action="store_true", help="print leave-one-set-out figures, build nothing")
    parser.add_argument("--cv-zh", action="store_true",
                        help="leave-one-set-out over the Chinese items for the zh opinion's thresholds")
    parser.add_argument("--zh-only", action="store_true", help="write only the Chinese bank (no encoder)")
    parser.add_argument("--head", action="store_true", help="write only the supervised head (review_head.npz)")
    parser.add_argument("--cv-head", action="store_true", help="leave-one-set-out figures for the supervised head")
    args = parser.parse_args(argv)
    if args.cv_head:
        from services.task.evaluation import format_report

        result = cross_validate_head()
        for mode in ("rules", "knn", "head"):
            print(format_report(f"all, {mode} (leave-one-set-out)", result[mode], show_errors=mode == "head"))
        for name, modes in result["by_set"].items():
            for mode, figures in modes.items():
                print(f"  {name:9s} {mode:5s} dec {figures['decision_accuracy']:.3f} "
                      f"uneth {figures['unethical_refusal_rate']:.3f} inf {figures['infeasible_refusal_rate']:.3f} "
                      f"fr {figures['false_refusal_rate']:.3f}")
        for lang in ("en", "zh"):
            knn = result["best"][lang + "_knn"]
            print(f"{lang} knn: dec {knn['decision_accuracy']:.3f} uneth {knn['unethical_refusal_rate']:.3f} "
                  f"inf {knn['infeasible_refusal_rate']:.3f} fr {knn['false_refusal_rate']:.3f}")
            for params, figures in result["top"][lang]:
                print(f"  {lang} {params}: dec {figures['decision_accuracy']:.3f} "
                      f"uneth {figures['unethical_refusal_rate']:.3f} inf {figures['infeasible_refusal_rate']:.3f} "
                      f"fr {figures['false_refusal_rate']:.3f}")
        return 0
    if args.head:
        write_heads()
        print(f"supervised head -> {review_head.HEAD_FILE.name}")
        return 0
    if args.cv_zh:
        from services.task.evaluation import format_report

        result = cross_validate_zh()
        print(format_report("Chinese items, rules (+ English layer, silent on Chinese)", result["rules"]))
        print(f"best: {result['best_params']}")
        print(format_report("Chinese items, rules + zh opinion (leave-one-set-out)", result["combined"],
                            show_errors=True))
        for params, figures in result["top"]:
            print(f"  {params.k} {params.familiar} {params.add_share} {params.clear_share}: "
                  f"dec {figures['decision_accuracy']:.3f} uneth {figures['unethical_refusal_rate']:.3f} "
                  f"inf {figures['infeasible_refusal_rate']:.3f} fr {figures['false_refusal_rate']:.3f}")
        return 0
    count_zh = write_zh_bank()
    print(f"{count_zh} Chinese exemplars -> {zh_review.BANK_FILE.name}")
    if args.zh_only:
        return 0
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
    semantic_review.load_bank.cache_clear()
    write_heads()
    print(f"supervised head -> {review_head.HEAD_FILE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
