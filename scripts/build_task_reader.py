"""Build the learned task-type reader (services/task/knowledge/task_reader.npz) and cross-validate it.

The reader (services/task/task_reader.py) is a multinomial logistic regression per language over the accept,
look-alike and clarify items of every learnable labelled set present (evaluation.TASK_SETS; the sealed sets are
never read), predicting the five task types and ``clarify``. English features: the
all-MiniLM-L6-v2 embeddings of services/task/semantic_review.py; Chinese: character 1-3-gram TF-IDF
(services/task/review_head.py). scikit-learn is needed here only.

    .venv/bin/python scripts/build_task_reader.py          # fit on every learnable set, write the npz
    .venv/bin/python scripts/build_task_reader.py --cv     # leave-one-set-out figures, nothing written

``--cv``: each set is scored by readers trained without it (leave-one-set-out, LOSO). It prints, per language
and overall, the task-type accuracy (over the items whose expected decision is accept, as scripts/eval_task.py
counts it) and the accept/clarify decision accuracy (over accept, look-alike and clarify items; the review's
refusals, which the reader does not touch, count as wrong) for: the model grid (the reader alone, and with the
best fill-in policy), the rules alone, the reader alone, and each policy family: (a) fill in where the rules find
no type, (b) override the rules' type, (c) a table's kind by the stated metrics, (d) the reader's clarify
probability flipping accept <-> clarify. Each family gets its LOSO figure (thresholds chosen on all folds) and a
nested one (for each held-out set the thresholds are chosen on the other sets' own LOSO predictions). The model
is the best reader-alone LOSO accuracy; the family the best nested figure (ties to the simpler); the thresholds
the best LOSO within it. Copy the outcome into task_reader.POLICY_EN / POLICY_ZH and DEFAULT_MODEL below.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import sys
import time
from dataclasses import dataclass

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.task import task_reader  # noqa: E402
from services.task.evaluation import SEALED_TASK_SETS, TASK_SETS  # noqa: E402
from services.task.task_reader import CLASSES, NEVER, TASK_TYPES, Policy  # noqa: E402

SET_DIR = ROOT / "tests" / "task_eval"

# The model grid: ("logreg", C, balanced) or ("knn", k).
MODELS = [("logreg", c, b) for c in (1.0, 4.0, 16.0, 64.0, 256.0) for b in (True, False)] + \
         [("knn", k) for k in (3, 5, 7, 11, 15)]
# The models --cv chose (best reader-alone LOSO accuracy, ties to the more regularised): see task_reader.CV_FIGURES.
DEFAULT_MODEL = {"en": ("logreg", 16.0, True), "zh": ("logreg", 64.0, True)}

GRID = {
    "fill_p": (NEVER, 0.0, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9),
    "fill_over_clarify": (True, False),
    "override_p": (NEVER, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97),
    "metrics_kind": (True, False),
    "to_clarify_p": (NEVER, 0.5, 0.6, 0.7, 0.8, 0.9),
    "to_accept_p": (-1.0, 0.05, 0.1, 0.2, 0.3),
}


# --- the items ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    text: str
    source: str
    lang: str  # en | zh, by task_reader's routing (is_chinese)
    category: str
    expected_decision: str
    expected_type: str | None
    refused: bool  # the review refuses it (the reader does not touch the review)
    rule: task_reader.RuleReading


def load_items(sets: tuple[str, ...]) -> list[Item]:
    """Accept, look-alike and clarify items of the sets present, with the rules' reading of each."""
    from services.task import rules
    from services.task.evaluation import load_set
    from services.task.semantic_review import is_chinese

    items = []
    for name in sets:
        if name in SEALED_TASK_SETS:  # the sealed final test sets: never opened here
            raise SystemExit(f"{name} is sealed")
        path = SET_DIR / f"{name}.jsonl"
        if not path.exists():
            continue
        for item in load_set(path):
            if item["category"] not in task_reader.TRAINING_CATEGORIES:
                continue
            text = item["text"]
            norm = rules.normalize(text)
            targets = [t for t, _ in rules._targets_with_spans(norm)]
            items.append(Item(
                text, name, "zh" if is_chinese(text) else "en", item["category"], item["expected"]["decision"],
                item["expected"].get("task_type"), rules.full_review(text) is not None,
                rules.rule_task_reading(text, norm, targets),
            ))
    return items


def label_of(item: Item) -> str:
    return "clarify" if item.category == "clarify" else item.expected_type


# --- features and leave-one-set-out probabilities -------------------------------------------------


_EMBEDDINGS: dict[str, np.ndarray] = {}


def embeddings(texts: list[str]) -> np.ndarray:
    from services.task.semantic_review import encode

    missing = [t for t in dict.fromkeys(texts) if t not in _EMBEDDINGS]
    if missing:
        for text, row in zip(missing, encode(missing), strict=True):
            _EMBEDDINGS[text] = row
    return np.stack([_EMBEDDINGS[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)


def _fit_predict(x_train, labels: list[str], x_test, model: tuple) -> np.ndarray:
    """One model fitted on (x_train, labels), its probabilities for the rows of x_test."""
    dense_test = x_test.toarray() if hasattr(x_test, "toarray") else x_test
    if model[0] == "knn":
        points = x_train.toarray() if hasattr(x_train, "toarray") else x_train
        reader = task_reader.Reader(points.astype(np.float64),
                                    np.array([CLASSES.index(label) for label in labels]), None, model[1])
    else:
        coef, intercept = task_reader.fit_logreg(x_train, labels, model[1], model[2])
        reader = task_reader.Reader(coef, intercept)
    return np.stack([reader.probabilities(row.astype(np.float64)) for row in dense_test])


def loso_probabilities(items: list[Item], lang: str, models: list[tuple]) -> dict[tuple, np.ndarray]:
    """{model: (n, 6) probabilities} of each item of ``lang`` by readers trained without the item's set."""
    from services.task.review_head import fit_vocabulary

    mine = [i for i in items if i.lang == lang]
    out = {model: np.zeros((len(mine), len(CLASSES))) for model in models}
    for source in dict.fromkeys(i.source for i in mine):
        train = [i for i in mine if i.source != source]
        test = [k for k, i in enumerate(mine) if i.source == source]
        train_texts, test_texts = [i.text for i in train], [mine[k].text for k in test]
        if lang == "zh":
            vocabulary = fit_vocabulary(train_texts)
            x_train = task_reader.features(train_texts, vocabulary)
            x_test = task_reader.features(test_texts, vocabulary)
        else:
            x_train = embeddings(train_texts).astype(np.float64)
            x_test = embeddings(test_texts).astype(np.float64)
        labels = [label_of(i) for i in train]
        for model in models:
            out[model][test] = _fit_predict(x_train, labels, x_test, model)
    return out


# --- scoring policies (vectorised; checked against task_reader.decide) -----------------------------

UNSPEC = len(TASK_TYPES)  # the rules' "no type" code
TAB_C, TAB_R = TASK_TYPES.index("tabular_classification"), TASK_TYPES.index("tabular_regression")
GENERATION = TASK_TYPES.index("text_generation")


def _code(task_type: int) -> int:
    for name, value in task_reader.TYPE_ENUM.items():
        if value == task_type:
            return TASK_TYPES.index(name)
    return UNSPEC


@dataclass
class Arrays:
    rule_type: np.ndarray
    explicit: np.ndarray
    table_vague: np.ndarray
    metric_kind: np.ndarray  # -1 no deciding metric, TAB_C or TAB_R
    classify_intent: np.ndarray  # the reader never overrides these into generation
    firm_writing: np.ndarray  # the reader never overrides the rules' generation read from a firm writing cue
    kind_read: np.ndarray  # nor a table's kind the rules read from its metrics or from what is predicted
    refused: np.ndarray
    expected_type: np.ndarray  # -1 for clarify items
    expected_clarify: np.ndarray
    accept_item: np.ndarray


def arrays(items: list[Item]) -> Arrays:
    def kind(metrics):
        from services.task.task_reader import _CLASSIFICATION_METRICS, _REGRESSION_METRICS

        r, c = bool(metrics & _REGRESSION_METRICS), bool(metrics & _CLASSIFICATION_METRICS)
        return TAB_R if r and not c else TAB_C if c and not r else -1

    return Arrays(
        np.array([_code(i.rule.task_type) for i in items]),
        np.array([i.rule.explicit_vague for i in items]),
        np.array([i.rule.table_vague for i in items]),
        np.array([kind(i.rule.metrics) for i in items]),
        np.array([i.rule.classify_intent for i in items]),
        np.array([i.rule.firm_writing for i in items]),
        np.array([i.rule.kind_read for i in items]),
        np.array([i.refused for i in items]),
        np.array([TASK_TYPES.index(i.expected_type) if i.expected_type else -1 for i in items]),
        np.array([i.expected_decision == "clarify" for i in items]),
        np.array([i.expected_decision == "accept" for i in items]),
    )


def apply(a: Arrays, p: np.ndarray | None, policy: Policy | str) -> tuple[np.ndarray, np.ndarray]:
    """(type code, clarify) per item; ``policy`` "rules" or "reader" for the rules or the reader alone."""
    rule_clarify = a.explicit | a.table_vague | (a.rule_type == UNSPEC)
    if policy == "rules" or p is None:
        return a.rule_type.copy(), rule_clarify.copy()
    mine = np.argmax(p[:, :UNSPEC], axis=1)
    p_type = p[np.arange(len(mine)), mine]
    p_clarify = p[:, UNSPEC]
    if policy == "reader":
        return mine, np.argmax(p, axis=1) == UNSPEC
    t, clarify = a.rule_type.copy(), rule_clarify.copy()
    free = ~a.explicit
    fill = free & (a.rule_type == UNSPEC) & (p_type >= policy.fill_p)
    if policy.fill_over_clarify:
        fill &= p_type >= p_clarify
    t[fill], clarify[fill] = mine[fill], False
    over = free & (a.rule_type != UNSPEC) & (mine != a.rule_type) & (p_type >= policy.override_p)
    over &= ~((mine == GENERATION) & a.classify_intent)
    over &= ~((a.rule_type == GENERATION) & a.firm_writing)  # task_reader._kept
    over &= ~(np.isin(a.rule_type, (TAB_C, TAB_R)) & np.isin(mine, (TAB_C, TAB_R)) & a.kind_read)
    t[over] = mine[over]
    if policy.metrics_kind:
        changed = free & (t != a.rule_type) & ((t == TAB_C) | (t == TAB_R)) & (a.metric_kind >= 0)
        t[changed] = a.metric_kind[changed]
    to_clarify = free & ~clarify & (a.rule_type != UNSPEC) & (p_clarify >= policy.to_clarify_p)
    to_accept = free & clarify & a.table_vague & (p_clarify <= policy.to_accept_p) & ~to_clarify
    clarify[to_clarify] = True
    clarify[to_accept] = False
    return t, clarify


def score(a: Arrays, t: np.ndarray, clarify: np.ndarray, mask: np.ndarray | None = None) -> dict:
    mask = np.ones(len(t), dtype=bool) if mask is None else mask
    type_ok = ~a.refused & (t == a.expected_type) & a.accept_item & mask
    decision_ok = ~a.refused & (clarify == a.expected_clarify) & mask
    n_accept, n = int((a.accept_item & mask).sum()), int(mask.sum())
    return {"type": int(type_ok.sum()), "n_type": n_accept, "decision": int(decision_ok.sum()), "n": n,
            "type_acc": type_ok.sum() / max(n_accept, 1), "decision_acc": decision_ok.sum() / max(n, 1)}


def complexity(policy: Policy) -> int:
    return sum((policy.fill_p < NEVER, policy.override_p < NEVER, policy.to_clarify_p < NEVER,
                policy.to_accept_p >= 0, not policy.metrics_kind, not policy.fill_over_clarify))


def policies(grid: dict = GRID):
    for values in itertools.product(*grid.values()):
        yield Policy(**dict(zip(grid.keys(), values, strict=True)))


def choose(a: Arrays, p: np.ndarray, grid: dict = GRID, family=None) -> tuple[Policy, dict]:
    """The best policy of ``family`` by correct task types + correct decisions; ties: the simpler policy, then
    fewer changes of the rules' answers, then higher thresholds."""
    rule_t, rule_c = apply(a, p, "rules")
    best, best_key, best_score = None, None, None
    for policy in policies(grid):
        if family is not None and not family(policy):
            continue
        t, c = apply(a, p, policy)
        s = score(a, t, c)
        changes = int(((t != rule_t) | (c != rule_c)).sum())
        key = (-(s["type"] + s["decision"]), complexity(policy), changes,
               -policy.fill_p, -policy.override_p, -policy.to_clarify_p, policy.to_accept_p)
        if best_key is None or key < best_key:
            best, best_key, best_score = policy, key, s
    return best, best_score


def _no_flips(q: Policy) -> bool:
    return q.to_clarify_p >= NEVER and q.to_accept_p < 0


# The policy families, simplest first. (c) (a table's kind follows the stated metrics, as in the rules) is in
# all of them; "(a) without (c)" is reported beside them.
FAMILIES = {
    "(a)+(c) fill in": lambda q: q.override_p >= NEVER and _no_flips(q) and q.metrics_kind,
    "(a)+(b)+(c) fill in, override": lambda q: _no_flips(q) and q.metrics_kind,
    "(a)+(b)+(c)+(d) and clarify flips": lambda q: q.metrics_kind,
}
NO_METRICS_KIND = ("(a) fill in without (c)", lambda q: q.override_p >= NEVER and _no_flips(q) and not q.metrics_kind)


def check_against_decide(items: list[Item], a: Arrays, p: np.ndarray) -> None:
    """The vectorised policy is task_reader.decide, item by item, on a sample of the grid."""
    sample = list(policies())[::97]
    for policy in sample:
        t, c = apply(a, p, policy)
        for k, item in enumerate(items):
            got_t, got_c = task_reader.decide(item.rule, task_reader.Reading(tuple(float(x) for x in p[k])), policy)
            assert (_code(got_t), got_c) == (int(t[k]), bool(c[k])), (policy, item.text)


# --- reports --------------------------------------------------------------------------------------


def fmt(s: dict) -> str:
    return f"type {s['type_acc']:.3f} ({s['type']}/{s['n_type']})  decision {s['decision_acc']:.3f} ({s['decision']}/{s['n']})"


def cross_validate(items: list[Item], probs: dict | None = None) -> dict:
    """Print the leave-one-set-out figures; return the chosen model and policy per language."""
    langs = ("en", "zh")
    by_lang = {lang: [i for i in items if i.lang == lang] for lang in langs}
    a = {lang: arrays(by_lang[lang]) for lang in langs}
    print(f"items: en {len(by_lang['en'])}, zh {len(by_lang['zh'])}; sets: "
          + ", ".join(dict.fromkeys(i.source for i in items)))

    print("\n== the model grid, LOSO: the reader alone (6-class accuracy), and with the best fill-in policy")
    probs = dict(probs or {})
    chosen_models = {}
    for lang in langs:
        if lang not in probs:
            started = time.time()
            probs[lang] = loso_probabilities(items, lang, MODELS)
            print(f"  ({lang}: {time.time() - started:.0f}s)")
        labels = np.array([CLASSES.index(label_of(i)) for i in by_lang[lang]])
        accs = {}
        for model in MODELS:
            p = probs[lang][model]
            accs[model] = float((np.argmax(p, axis=1) == labels).mean())
            _policy, s = choose(a[lang], p, family=FAMILIES["(a)+(c) fill in"])
            print(f"  {lang} {str(model):<26} reader alone {accs[model]:.3f}   fill in {fmt(s)}")
        # the model: the best reader-alone accuracy (ties: the earlier, more regularised, of the grid)
        chosen_models[lang] = max(MODELS, key=lambda m: (round(accs[m], 6), -MODELS.index(m)))

    chosen_policies, finals = {}, {}
    for lang in langs:
        model, mine = chosen_models[lang], by_lang[lang]
        p = probs[lang][model]
        check_against_decide(mine, a[lang], p)
        sources = np.array([i.source for i in mine])
        inner = {}  # per held-out set: the other sets' own LOSO probabilities, for the nested estimate
        for source in dict.fromkeys(sources):
            rest = [i for i in mine if i.source != source]
            inner[source] = (arrays(rest), loso_probabilities(rest, lang, [model])[model])
        print(f"\n== {lang}: model {model}; LOSO figures (thresholds chosen on all folds) and nested ones "
              "(thresholds chosen without the held-out set, on the other sets' own LOSO)")
        rows = [("rules alone", apply(a[lang], p, "rules"), None), ("reader alone", apply(a[lang], p, "reader"), None)]
        nested_scores = {}
        for name, family in (NO_METRICS_KIND, *FAMILIES.items()):
            policy, _s = choose(a[lang], p, family=family)
            nt, nc = apply(a[lang], p, "rules")
            for source, (inner_a, inner_p) in inner.items():
                inner_policy, _ = choose(inner_a, inner_p, family=family)
                t, c = apply(a[lang], p, inner_policy)
                m = sources == source
                nt[m], nc[m] = t[m], c[m]
            nested = score(a[lang], nt, nc)
            nested_scores[name] = (nested["type"] + nested["decision"], policy)
            rows.append((f"{name}: {policy_text(policy)}", apply(a[lang], p, policy), nested))
        for name, (t, c), nested in rows:
            print(f"  {name}\n      LOSO   {fmt(score(a[lang], t, c))}"
                  + (f"\n      nested {fmt(nested)}" if nested else ""))
        # the family: the best nested figure, ties to the simpler; its thresholds: the best LOSO of the family
        best = max(FAMILIES, key=lambda name: (nested_scores[name][0], -list(FAMILIES).index(name)))
        chosen_policies[lang] = nested_scores[best][1]
        finals[lang] = apply(a[lang], p, chosen_policies[lang])
        print(f"  chosen: {best}: {chosen_policies[lang]!r}")

    print("\n== overall (en + zh), LOSO")
    pooled = _concat([a[lang] for lang in langs])
    sources = np.array([i.source for lang in langs for i in by_lang[lang]])
    columns = {
        "rules alone": [apply(a[lang], probs[lang][chosen_models[lang]], "rules") for lang in langs],
        "reader alone": [apply(a[lang], probs[lang][chosen_models[lang]], "reader") for lang in langs],
        "chosen": [finals[lang] for lang in langs],
    }
    joined = {name: (np.concatenate([t for t, _ in parts]), np.concatenate([c for _, c in parts]))
              for name, parts in columns.items()}
    for name, (t, c) in joined.items():
        print(f"  {name:<13} {fmt(score(pooled, t, c))}")
    print("  per set, rules -> chosen:")
    for source in dict.fromkeys(sources):
        m = sources == source
        r, c = score(pooled, *joined["rules alone"], m), score(pooled, *joined["chosen"], m)
        print(f"  {source:<11} type {r['type_acc']:.3f} -> {c['type_acc']:.3f}   "
              f"decision {r['decision_acc']:.3f} -> {c['decision_acc']:.3f}   (n {c['n']})")
    return {"models": chosen_models, "policies": chosen_policies}


def _concat(parts: list[Arrays]) -> Arrays:
    return Arrays(*(np.concatenate([getattr(p, f) for p in parts]) for f in Arrays.__dataclass_fields__))


def policy_text(policy: Policy) -> str:
    def t(v):
        return "never" if v >= NEVER or v < 0 else f"{v:g}"

    return (f"fill {t(policy.fill_p)}{'' if policy.fill_over_clarify else ' (even over clarify)'}, override {t(policy.override_p)}, metrics_kind {policy.metrics_kind}, "
            f"to_clarify {t(policy.to_clarify_p)}, to_accept {t(policy.to_accept_p)}")


# --- build ----------------------------------------------------------------------------------------


def build(sets: tuple[str, ...], models: dict[str, tuple] = DEFAULT_MODEL) -> None:
    examples = task_reader.training_examples(SET_DIR, sets)
    readers = {}
    for lang in ("en", "zh"):
        mine = [e for e in examples if e.chinese == (lang == "zh")]
        texts, labels = [e.text for e in mine], [e.label for e in mine]
        model = models[lang]
        emb = None if lang == "zh" else embeddings(texts)
        if model[0] == "knn":
            readers[lang] = task_reader.fit_reader(texts, labels, lang == "zh", 1.0, False, emb, knn=model[1])
        else:
            readers[lang] = task_reader.fit_reader(texts, labels, lang == "zh", model[1], model[2], emb)
        print(f"{lang}: {len(mine)} examples, model {model}")
    present = tuple(s for s in sets if (SET_DIR / f"{s}.jsonl").exists())
    task_reader.save_readers(readers, task_reader.fingerprint(examples), present)
    print(f"wrote {task_reader.READER_FILE.relative_to(ROOT)} (sets: {', '.join(present)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", action="store_true", help="print leave-one-set-out figures, write nothing")
    args = parser.parse_args(argv)
    sets = TASK_SETS
    if args.cv:
        import os

        os.environ[task_reader.ENV_SWITCH] = "0"  # the rules' own reading (the reader is simulated here)
        cross_validate(load_items(sets))
        return 0
    build(sets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
