"""The rule brain: reads a request into a TaskSpec offline and deterministically.

Knowledge (review patterns, task-type cues, vague requests) lives in ``knowledge/rules.yaml``; this
module holds the grammar: normalising numbers (Chinese numerals, "half a second", "5万", "1,500"),
finding metric targets with their value, the latency / size / training-time constraints, class
labels and the columns a tabular request names.

English and Chinese are read alike: the text is NFKC-normalised (full-width ，％（ become , % (),
R² becomes R2) and number words become digits before anything is extracted.
"""

from __future__ import annotations

import functools
import pathlib
import re
import unicodedata
from dataclasses import dataclass

import yaml

from traineragent.v1 import common_pb2

KNOWLEDGE = pathlib.Path(__file__).with_name("knowledge") / "rules.yaml"
_FLAGS = re.IGNORECASE
# A word boundary between ASCII words only, so "F1不低于0.9" and "R2达到0.85" still end "F1" and "R2"
# (Python's \b treats Chinese characters as word characters).
_ASCII_BOUNDARY = r"(?:(?<![A-Za-z0-9_])(?=[A-Za-z0-9_])|(?<=[A-Za-z0-9_])(?![A-Za-z0-9_]))"


def _rx(pattern: str, flags: int = _FLAGS) -> re.Pattern[str]:
    return re.compile(pattern.replace(r"\b", _ASCII_BOUNDARY), flags)


# ---------------------------------------------------------------------------------------------
# Metrics: (pattern, metric). Longer names first so "mean absolute error" is not read as "error".
_METRICS: list[tuple[str, int]] = [
    (r"\bmacro[- ]?f1(?:[- ]?score)?\b|\bf1(?:[- ]?(?:score|macro|measure))?\b|\bf-?(?:1|one)\b|\bf-?(?:score|measure)\b"
     r"|\bf1值|f1分数|f1得分", common_pb2.METRIC_F1),
    (r"\bprecision\b|\bprecise\b|精确率|查准率|精准率|精确度", common_pb2.METRIC_PRECISION),
    (r"\brecall\b|\bsensitivity\b|\btrue positive rate\b|\btpr\b|召回率|召回|查全率|检出率", common_pb2.METRIC_RECALL),
    (r"\bmae\b|\bmean absolute error\b|\bmean abs(?:olute)? err(?:or)?\b|\baverage (?:absolute )?error\b"
     r"|平均绝对误差|平均误差", common_pb2.METRIC_MAE),
    (r"\brmse\b|\broot[- ]mean[- ]squared?[- ]error\b|\broot mean squared?\b|均方根误差", common_pb2.METRIC_RMSE),
    (r"\br\^?2\b|\br-squared?\b|\br squared?\b|\bcoefficient of determination\b|决定系数|r方|拟合优度",
     common_pb2.METRIC_R2),
    (r"\bperplexity\b|\bppl\b|困惑度", common_pb2.METRIC_PERPLEXITY),
    (r"\b(?:top-?1 )?(?:accuracy|acc?urr?acy|accuarcy|accurcy)\b|\baccurate\b|\bacc\b|准确率|正确率|准确度|识别率|(?<![酒])精度|准确性|准确"
     r"|\b(?:classified|labell?ed|sorted|predicted|identified|recogni[sz]ed|routed|tagged|read) correctly\b"
     r"|\bcorrectly (?:classified|labell?ed|sorted|predicted|identified|recogni[sz]ed|routed|tagged)\b"
     r"|\b(?:right|correct)(?=\s+(?:(?:at least|about|around|over|more than|above|in|on|for|nearly)\s+)?\d+(?:\.\d+)?\s?%)"
     r"|(?<=%\s)(?:right|correct)\b",  # "90% right is fine" (as normalised from "nine out of ten right")
     common_pb2.METRIC_ACCURACY),
]
_LOWER_IS_BETTER = {common_pb2.METRIC_MAE, common_pb2.METRIC_RMSE, common_pb2.METRIC_PERPLEXITY}
_FRACTION_METRICS = {
    common_pb2.METRIC_ACCURACY,
    common_pb2.METRIC_F1,
    common_pb2.METRIC_PRECISION,
    common_pb2.METRIC_RECALL,
    common_pb2.METRIC_R2,
}
_METRIC_RE = [(_rx(p), m) for p, m in _METRICS]

# A number: 95, 0.9, .85, 99.95; then an optional percent sign or word.
_NUMBER_RE = re.compile(
    r"(?<![A-Za-z\d.\-_/#^])(\d+(?:\.\d+)?|\.\d+)(?![\d_])\s*(%|percent\b|per cent\b|pct\b|个百分点)?", _FLAGS
)


@dataclass(frozen=True)
class _Unit:
    pattern: str
    kind: str  # latency | size | train | seconds | ambiguous_m
    factor: float  # to ms, MB or minutes (seconds: to seconds)


_UNITS = [
    _Unit(r"ms|msecs?|millisec(?:ond)?s?|milli-seconds?|毫秒", "latency", 1.0),
    _Unit(r"µs|μs|us|usecs?|micro-?sec(?:ond)?s?|微秒", "latency", 0.001),
    _Unit(r"ns|nanosec(?:ond)?s?|纳秒", "latency", 0.000001),
    _Unit(r"kb|kib|kilobytes?|千字节", "size", 1 / 1024),
    _Unit(r"mb|mib|megabytes?|megs?|兆字节|兆(?!瓦|赫|帕|焦|欧|瓦时)|mb大小", "size", 1.0),
    _Unit(r"gb|gib|gigabytes?|gigs?|吉字节", "size", 1024.0),
    _Unit(r"tb|terabytes?", "size", 1024.0 * 1024.0),
    _Unit(r"min(?:ute)?s?|mins?\.|分钟|分鐘", "train", 1.0),
    _Unit(r"h|hrs?|hours?|小时|个小时|钟头|个钟头", "train", 60.0),
    _Unit(r"days?|天", "train_day", 1440.0),
    _Unit(r"s|secs?|seconds?|秒钟|秒(?!杀)", "seconds", 1.0),  # 秒杀 is a flash sale
    _Unit(r"m|g", "ambiguous_m", 1.0),
]
_UNIT_RE = re.compile(
    r"(?<![A-Za-z\d.\-_/#])(\d+(?:\.\d+)?|\.\d+)\s*-?\s*(?:"
    + "|".join(f"(?P<u{i}>{u.pattern})" for i, u in enumerate(_UNITS))
    + r")(?![a-z])",
    _FLAGS,
)
_UNIT_AFTER_RE = re.compile(
    r"\s*-?\s*(?:" + "|".join(u.pattern for u in _UNITS if u.kind != "ambiguous_m") + r")(?![a-z])", _FLAGS
)

# What a number next to a metric must not be: a count of classes, samples, a time or a size.
_NOT_A_SCORE_AFTER = _rx(
    r"\s*(?:classes|class|queues?|categor(?:y|ies)|labels?|types?|kinds?|species|cards|breeds|buckets|tiers"
    r"|images?|photos?|pictures?|samples?|examples?|rows?|records?|columns?|features?|languages?|decimal"
    r"|years?|months?|weeks?|times|x\b|k\b|folds?|epochs?|trials?|models?|stars?|classes|digits?|points?"
    r"|类|种|个(?!百分点)|张|条|行|列|位|年|月|周|天|家|次|倍|分类|星)",
    _FLAGS,
)
_NOT_A_SCORE_BEFORE = _rx(r"(?:\btop[- ]?|\bk\s*=\s*|\bfold\s*|\bversion\s*|第)\s*$")
# what others report, for reference: a competitor, a paper, a vendor's tool, last year's forecast
_REFERENCE_BEFORE = _rx(
    r"\b(?:competitors?(?:'s?)?|rivals?|papers?|stud(?:y|ies)|publications?|articles?|blog(?: posts?)?|benchmarks?"
    r"|leaderboards?|literature|vendors?(?:'s)?|(?:previous|prior|old|existing|earlier) (?:model|study|system|version"
    r"|approach|work|classifier|tool)(?:'s)?|last year'?s?|industry average|state[- ]of[- ]the[- ]art|sota|published)\b"
    r"|\b(?:manual|human|hand-made|handmade)\s+(?:forecasts?|estimates?|guess\w*|predictions?|labell?ing|review\w*"
    r"|process|classification|sorting|triage|checks?|inspection|grading|coding|routing)\b"
    r"|\b(?:humans?|people|staff|experts?|specialists?|[a-z]+(?<!classifier)(?<!regressor)(?<!predictor)(?<!detector)"
    r"(?<!transformer)(?<!encoder)(?<!tracker)(?:ist|ian|er|or)s?)(?:'s|s'|')\s+(?:own\s+|current\s+|usual\s+)?"
    r"(?:guess\w*|estimat\w*|forecast\w*|predictions?|judg(?:e)?ments?)\b"
    r"|同行|论文|文献|竞品|竞争对手|对手|友商|宣称|号称|声称|去年|上一版|上一代|人工预测|参考值|作为参考"
    r"|人工(?:估|判断|分类|审核|分拣|标注|识别|预估|检查|检测|质检)|凭经验|靠经验|经验估|目测|肉眼|老师傅"
)
# words that make the number after a reference a requirement after all ("beat the previous model: F1 at least 0.9")
_REQUIREMENT = _rx(
    r"\b(?:at least|or (?:more|better|above|higher)|must|need\w*|require\w*|should|target\w*|goal|aim\w*|want\w*"
    r"|minimum|no (?:less|lower|worse) than|beat\w*|exceed\w*|at most|under|below)\b|≥|>=|不低于|至少|要求|需要|达到|以上|超过"
)
# between a number and a metric named in brackets after it: "45 kg on average (MAE)", "90% (precision)"
_NAMES_THE_METRIC = re.compile(r"[^\d()\n。;；]{0,30}\(\s*")
# a requirement, in the clause of a metric's figure: the goal, where a metric is read twice
_GOAL = _rx(
    r"\b(?:at least|at most|or (?:more|better|above|higher|less|lower|fewer|under|below)|must|need\w*|require\w*"
    r"|should|target\w*|goal|aim\w*|want\w*|would like|'d like|hop(?:e|ing)|expect\w*|minimum|maximum"
    r"|no (?:less|lower|worse|more|higher|worse) than|beat\w*|exceed\w*|under|below|above|within|up to)\b"
    r"|≥|>=|≤|<=|<|>|不低于|不少于|不高于|不超过|至少|最少|最多|要求|需要|达到|以上|以内|以下|目标|希望|想要|争取|期望|必须|应该|应当")
_BARE_SHARE = _rx(
    r"(?:\b(?:reach|reaches|hit|achieve|attain|get to|gets to|be right|be correct)|达到|做到)\s*(?:at least\s+|about\s+"
    r"|around\s+|roughly\s+|至少|大约|约)?(\d+(?:\.\d+)?)\s*%(?=\s*(?:or (?:more|better|higher|above)|以上|及以上|左右)?"
    r"\s*(?:[.;,!?。；，！？]|$|\b(?:and|but)\b))")
_ASPIRATION_BEFORE = _rx(r"(?:接近|逼近|趋近|无限接近|\b(?:close to|as close to|near|nearly|approaching))\s*$")
_MIN_MAX_AFTER = _rx(r"\s*(?:min(?:imum)?|max(?:imum)?)\b(?!\s*(?:of )?(?:train|fit|budget))\.?")

_ERROR_UNIT_AFTER = _rx(
    r"\s*(?:years?|yrs?|months?|weeks?|days?|hours?|hrs?|minutes?|mins?|seconds?|secs?|degrees?|dollars?|euros?"
    r"|yuan|usd|eur|points?|pts|marks|kwh|mwh|kw|mw|gw|watts?|kg|km|tons?|tonnes?|units|年|个月|周|天|小时|分钟|秒|度|元|块|公斤"
    r"|people|persons?|staff|employees|workers|patients|visitors|customers|passengers|orders|calls|items|parcels"
    r"|packages|trucks|vehicles|cars|beds|tickets|units|dealers|riders|drivers|shifts"
    r"|千瓦时|兆瓦时|兆瓦|千瓦|瓦|吨|公里|厘米|毫米|米|个人|人次|人|名|位|辆|件|单|台|箱|包|张床|张|床|例|次|个(?!百分点|月|小时|类))(?![a-z])"
)
_BASELINE_BEFORE = _rx(
    r"\b(?:currently|current(?:ly)?|right now|now (?:at|is|are|have|get)|today|at the moment|baseline|existing"
    r"|our old|the old|last (?:model|version)|we (?:have|get|got|are at)|used to|was)\b(?:[^0-9]|(?<=f)1|(?<=r)2){0,30}$"
    r"|\b(?:model|system|classifier|rules?|heuristics?|baseline|vendor|solution|approach|tool|version|setup|pipeline|it"
    r"|score ?cards?|process|workflow|add-?on|plug-?in|service|software|product|api|app|platform|package|module)"
    r"(?:[\s-]+(?!(?:that|which|to|should|must|will|would|needs?|can|could|has to|have to)\b)[\w']+){0,6}?"
    r" (?:gets|got|scores|scored|achieves|achieved|reaches|reached|hits|hit|sits at|sits around|hovers? (?:at|around)"
    r"|is at|was at|is around|was around|manages|managed|has|had|gives|gave)\b"
    r"(?:[^0-9]|(?<=f)1|(?<=r)2){0,30}$"
    r"|\b(?:humans?|people|staff|experts?|doctors?|physicians?|clinicians?|radiologists?|pathologists?|nurses?|analysts?"
    r"|planners?|agents?|annotators?|reviewers?|graders?|inspectors?|dispatchers?|agronomists?|specialists?|teams?"
    r"|colleagues?|employees?|workers?|operators?|technicians?|clerks?)"
    r"(?:[\s-]+(?!(?:that|which|to|should|must|will|would|needs?|can|could|has to|have to)\b)[\w']+){0,3}?"
    r" (?:get|gets|got|score|scores|scored|achieve|achieves|achieved|reach|reaches|reached|hit|hits|manage|manages"
    r"|managed|catch|catches|caught|average|averages|are at|is at)\b(?:[^0-9]|(?<=f)1|(?<=r)2){0,30}$"
    r"|\b(?:are|is|were|was|'re)\s+(?:usually |typically |often |generally |currently |still |always )?(?:off|out|wrong)"
    r" by\b(?:[^0-9]){0,24}$"
    r"|\b(?:rules?(?:[- ]based)?(?: engine| system)?|heuristics?|regex(?:es)?|keyword (?:rules|matching|lists?)|baseline"
    r"|vendor(?:'s)? (?:model|tool|system)|(?:existing|old|current|legacy) (?:model|system|tool|setup|classifier)"
    r"|spreadsheet|manual process)\s+(?:that|which)\s+(?:gets|got|scores|scored|achieves|achieved|reaches|reached|hits"
    r"|manages|managed|gives|gave)\b(?:[^0-9]|(?<=f)1|(?<=r)2){0,30}$"
    r"|(?:目前|现在|现有|当前|原来|之前|以前|现状|现阶段|旧模型|老模型|原模型|现有模型|原有模型|旧版|老版本?)(?:[^0-9]|(?<=f)1|(?<=r)2){0,25}$"
)
_BASELINE_BEFORE_ZH_SENTENCE = re.compile(
    r"(?:目前|现在|现有|当前|原来|之前|以前|现状|现阶段)(?:用的|用着|在用|采用|靠)?(?:是|的是)?[^。；;!?！？\n\d]{0,16}(?:规则|系统|模型|方法|方案|人工|接口|工具|产品|服务|软件|算法|外包|厂商|供应商"
    r"|API|平台)[^。；;!?！？\n\d]{0,4}[,，]\s*(?:(?:准确率|正确率|精度|召回率|精确率|F1)值?(?:是|为|在|有)?)?\s*"
    r"(?:大概|大约|约|差不多|只有|能有|有|才|仅|也就|才到|只到)?\s*(?:大概|大约|约|差不多)?\s*$"
)
_ONLY_BEFORE_ZH = re.compile(r"(?:才|只有|仅有|只能达到|只能到|只达到|只到|也就)\s*(?:大概|大约|约|差不多)?\s*$")
_ONLY_IF_AFTER_ZH = re.compile(r"[^,，。；;!?！？\n]*(?:才|以上|及以上|起步)")
_CLAUSE_BREAK = re.compile(r"[;；。!?！？\n]|,|、|\.(?:\s|$)|\s(?:but|while|whereas|and then)\s|但是?|同时|并且|而且")
_CONNECTOR = _rx(r"^\s*(?:,|and|&|/|or|as well as|plus|和|与|及|以及|、|跟)?\s*(?:the\s+)?$")

_TRAIN_CUE = _rx(
    r"train\w*|fit(?:ting)?\b(?!\s+(?:in|on|into|within|inside)\b)|learn\w*|budget|build\w*|finish\w*|ready|done\b|complete\w*|turnaround|gpu[- ]hours?"
    r"|compute|time limit|time cap|wall[- ]?clock|run(?:s|ning)? for|search|epochs?|retrain\w*"
    r"|fine[- ]?tun\w*|训练|训完|练完|训好|训出来|微调|跑完|跑|完成|搞定|建好|出结果|学习|预算",
    _FLAGS,
)
_LATENCY_CUE = _rx(
    r"latenc\w*|inference|infer\b|respon\w*|serv\w*|per (?:request|image|call|query|prediction|item|sample"
    r"|sentence|message|ticket|photo|frame|email|review|row|record|input|document|tweet|example)|each (?:request"
    r"|image|call|query|prediction|photo|frame|email|message)|predict\w* time|answer\w*|reply|p\d\d|round[- ]trip"
    r"|real[- ]?time|score each|推理|延迟|响应|每张|单张|每条|单条|每次|每个|处理时间|耗时|返回",
    _FLAGS,
)
_DATA_CUE = _rx(
    r"\bdata\w*|(?<!model )(?<!weights )(?<!onnx )\bfiles?\b|\bcsv\b|\bupload\w*|\barchive|\bzip\b|\bcorpus|\bimages? total|\bfolders?\b|\bdirector(?:y|ies)\b"
    r"|\bcollection\b|\bdump\b|\bof (?:images|photos|scans|logs|text|records)\b|数据|(?<!模型)文件|语料|上传|文件夹|图片集",
    _FLAGS,
)
_SIZE_CUE = _rx(
    r"model|size|weights|footprint|artifact|memory|ram|disk|fit on|onnx|deploy\w*|binary|模型|体积|大小|内存|权重")


@functools.cache
def knowledge() -> dict:
    return yaml.safe_load(KNOWLEDGE.read_text(encoding="utf-8"))


@functools.cache
def _compiled() -> dict:
    """The knowledge file with every pattern compiled once (vocabulary names substituted)."""
    rules = knowledge()
    vocab = rules.get("vocab", {})

    def expand(pattern: str) -> str:
        return re.sub(r"<<(\w+)>>", lambda m: f"(?:{vocab[m.group(1)]})", pattern)

    def rule(item) -> list[re.Pattern[str]]:
        parts = item if isinstance(item, list) else [item]
        return [_rx(expand(p)) for p in parts]

    def entries(name: str) -> list[dict]:
        out = []
        for entry in rules.get(name, []):
            out.append(
                {
                    "category": entry["category"],
                    "explanation": entry["explanation"],
                    "rules": [rule(p) for p in entry["patterns"]],
                    "unless": [_rx(expand(p)) for p in entry.get("unless", [])],
                    "lookalike_exempt": bool(entry.get("lookalike_exempt")),
                    "scope": entry.get("scope", "request"),
                }
            )
        return out

    return {
        "unethical": entries("unethical"),
        "infeasible": entries("infeasible"),
        "lookalikes": [_rx(expand(p)) for p in rules["harmless_lookalikes"]],
        "evasion": _rx(expand(vocab["evasion"])),
        "evasion_described": _rx(expand(vocab["evasion_described"])),
        "protective": _rx(expand(vocab["protective_purpose"])),
        "consent": _rx(expand(vocab["consent"])),
        "certainty": _rx(expand(vocab["certainty"])),
        "impossibility_cue": _rx(expand(vocab["impossibility_cue"])),
        "impossibility_cue_zh": _rx(expand(vocab["impossibility_cue_zh"])),
        "task_cues": {
            modality: [(float(w), _rx(expand(p))) for w, p in cues]
            for modality, cues in rules["task_cues"].items()
        },
        "regression": [_rx(expand(p)) for p in rules["tabular_regression_cues"]],
        "classification": [_rx(expand(p)) for p in rules["tabular_classification_cues"]],
        "vague": [_rx(expand(p)) for p in rules["vague"]],
        "task_verbs": [_rx(expand(p)) for p in rules["task_verbs"]],
    }


def _any(patterns: list[re.Pattern[str]], text: str) -> re.Match[str] | None:
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            return match
    return None


# ---------------------------------------------------------------------------------------------
# Normalisation: numbers written in words or with Chinese units become digits.

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_NUM = "零〇一二两俩三四五六七八九十百千"


def _cn_to_number(s: str) -> float | None:
    """一百五十 → 150, 二十五 → 25, 十 → 10, 一点五 → 1.5, 三 → 3."""
    if "点" in s:
        whole, _, frac = s.partition("点")
        w = _cn_to_number(whole) if whole else 0
        if w is None or not frac or any(c not in _CN_DIGITS for c in frac):
            return None
        return float(f"{int(w)}.{''.join(str(_CN_DIGITS[c]) for c in frac)}")
    total, current = 0, 0
    for ch in s:
        if ch in _CN_DIGITS:
            current = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            total += (current or 1) * _CN_UNITS[ch]
            current = 0
        else:
            return None
    return float(total + current)


def _digits_or_cn(s: str) -> float:
    """30 → 30, 三十 → 30 (0 where the characters are no number)."""
    return float(s) if s.isdigit() else (_cn_to_number(s) or 0.0)


def _cn_share(numerator: str, denominator: str, original: str) -> str:
    """十次里对九次 → 准确率90% (left as written unless it is a share of at most one)."""
    n, d = _digits_or_cn(numerator), _digits_or_cn(denominator)
    return f"准确率{_fmt(round(100.0 * n / d, 4))}%" if 0 < n <= d else original


def _fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))  # "2000000", never "2e+06"
    return f"{value:g}" if value < 1e15 else str(value)


_EN_SMALL = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_EN_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
            "ninety": 90}
_EN_WORD = (
    r"(?:(?:" + "|".join(_EN_TENS) + r")(?:[- ](?:" + "|".join(list(_EN_SMALL)[1:10]) + r"))?"
    r"|" + "|".join(_EN_SMALL) + r")"
)
_EN_UNIT_WORDS = (
    r"percent|per cent|%|milliseconds?|ms\b|microseconds?|seconds?|secs?\b|minutes?|mins?\b|hours?|hrs?\b|days?"
    r"|megabytes?|mb\b|gigabytes?|gb\b|kilobytes?"
)


def _as_number(token: str) -> float:
    """A whole number written in digits or English words ("9", "nine", "a hundred")."""
    token = token.lower()
    if token[0].isdigit():
        return float(token)
    if token in ("a hundred", "one hundred"):
        return 100.0
    return _en_to_number(token)


def _en_to_number(words: str) -> float:
    words = words.lower().replace("-", " ")
    total = 0
    for w in words.split():
        total += _EN_TENS.get(w, 0) + _EN_SMALL.get(w, 0)
    return float(total)


_FRACTIONS = {"third": 3, "quarter": 4, "fifth": 5, "sixth": 6, "eighth": 8, "tenth": 10, "twentieth": 20,
              "fiftieth": 50, "hundredth": 100, "thousandth": 1000}
_FRACTION_COUNT = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}

_REPLACEMENTS: list[tuple[re.Pattern[str], object]] = [
    # thousands separators and k: 1,500 → 1500; 1.5k → 1500
    (re.compile(r"(?<![\d.])(\d{1,3})((?:,\d{3})+)(?![\d])"), lambda m: m.group(1) + m.group(2).replace(",", "")),
    (re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?k\b(?!\s*(?:b|byte))", _FLAGS), lambda m: _fmt(float(m.group(1)) * 1000)),
    # money in millions and billions: "$2M", "€1.5 million", "3 billion"
    (re.compile(r"(?<=[$€£¥])\s?(\d+(?:\.\d+)?)\s?(m|mn|bn|b)\b", _FLAGS),
     lambda m: _fmt(float(m.group(1)) * (1e9 if m.group(2).lower() in ("bn", "b") else 1e6))),
    (re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?(million|billion)\b", _FLAGS),
     lambda m: _fmt(float(m.group(1)) * (1e9 if m.group(2).lower() == "billion" else 1e6))),
    # decades ("the 1970s", "1900s to the 1990s") are not seconds
    (re.compile(r"\b((?:1[5-9]|20)\d0)s\b"), r"\1 decade"),
    # "9 out of 10", "nine in ten" → a percentage (only out of ten or a hundred)
    (re.compile(rf"\b(\d+|{_EN_WORD}) (?:times )?(?:out of|in) (?:every )?(10|100|ten|a hundred|one hundred)\b(?!\s*(?:ms|milli|sec|min|hour|day|week|month|year|mb|gb|%|percent))", _FLAGS),
     lambda m: _fmt(100.0 * _as_number(m.group(1)) / _as_number(m.group(2))) + "%"
     if 0 < _as_number(m.group(1)) <= _as_number(m.group(2)) else m.group(0)),
    # "at least three out of four tweets right": a share of items right, whatever the denominator
    (re.compile(rf"\b(\d+|{_EN_WORD}) (?:out of|in) (?:every )?(\d+|{_EN_WORD})((?:\s+[a-z]+){{0,2}})\s+(right|correct(?:ly)?)\b", _FLAGS),
     lambda m: f"{_fmt(100.0 * _as_number(m.group(1)) / _as_number(m.group(2)))}% {m.group(4)}"
     if 0 < _as_number(m.group(1)) <= _as_number(m.group(2)) else m.group(0)),
    # "accuracy of three in four", "recall: 4 out of 5", "be right 3 times out of 4": a share after a metric or "right"
    (re.compile(r"\b((?:accuracy|precision|recall|hit rate|right|correct(?:ly)?|accurate)(?:\s*:|\s+(?:of|at|is|be"
                rf"|around|about|roughly|at least|above|over|in))*)\s+(\d+|{_EN_WORD}) (?:times )?(?:out of|in) (?:every )?"
                rf"(\d+|{_EN_WORD})\b(?!\s*(?:ms|milli|sec|min|hour|day|week|month|year|mb|gb|%|percent))", _FLAGS),
     lambda m: f"{m.group(1)} {_fmt(100.0 * _as_number(m.group(2)) / _as_number(m.group(3)))}%"
     if 0 < _as_number(m.group(2)) <= _as_number(m.group(3)) else m.group(0)),
    # "十次里对九次", "十次有九次判对", "每4个里至少对3个": a share of answers right, as an accuracy
    (re.compile(rf"每?(\d+|[{_CN_NUM}]{{1,4}})(?:个|次|张|条|单|件|份|篇|例)?[\u4e00-\u9fff]{{0,3}}?(?:里面?|中间?|当中|之中|里头)"
                rf"(?:要|能|得|需要|至少|起码|最少|有)*(?:判|猜|认|分|答|说|识别|预测)?(?:对|准|正确)了?"
                rf"(\d+|[{_CN_NUM}]{{1,4}})(?:个|次|张|条|单|件|份|篇|例)?"),
     lambda m: _cn_share(m.group(2), m.group(1), m.group(0))),
    (re.compile(rf"每?(\d+|[{_CN_NUM}]{{1,4}})(?:个|次|张|条|单|件|份|篇|例)?[\u4e00-\u9fff]{{0,3}}?(?:里面?|中间?|当中|之中|里头)?"
                rf"(?:要|能|得|需要|至少|起码|最少|有)*(\d+|[{_CN_NUM}]{{1,4}})(?:个|次|张|条|单|件|份|篇|例)"
                r"(?:要|能|得|需要|是)*(?:判|猜|认|分|答|说|识别|预测)?(?:对|准|正确)(?:的)?"),
     lambda m: _cn_share(m.group(2), m.group(1), m.group(0))),
    # English fractions of time units
    (re.compile(r"\b(?:an?|one) hour and a half\b", _FLAGS), "90 minutes"),
    (re.compile(r"\bhalf an? hour\b", _FLAGS), "30 minutes"),
    (re.compile(r"\b(?:a )?quarter of an hour\b", _FLAGS), "15 minutes"),
    (re.compile(r"\bhalf a minute\b", _FLAGS), "30 seconds"),
    (re.compile(r"\bhalf a second\b", _FLAGS), "500 ms"),
    # "a quarter of a second", "a fifth of a second", "a tenth of a second", "two tenths of a second"
    (re.compile(rf"\b(?:(an?|one|two|three|four)[\s-])?({'|'.join(_FRACTIONS)})s?"
                r" of a second\b", _FLAGS),
     lambda m: _fmt(1000.0 * _FRACTION_COUNT.get((m.group(1) or "a").lower(), 1) / _FRACTIONS[m.group(2).lower()])
     + " ms"),
    (re.compile(r"\bhalf a day\b", _FLAGS), "12 hours"),
    # sizes: "half a gigabyte", "a gigabyte", "a quarter of a gigabyte"
    (re.compile(r"\bhalf an? (gigabyte|gig|terabyte|megabyte)\b", _FLAGS), lambda m: f"0.5 {m.group(1)}"),
    (re.compile(r"\b(?:a )?quarter of an? (gigabyte|gig|terabyte|megabyte)\b", _FLAGS), lambda m: f"0.25 {m.group(1)}"),
    (re.compile(r"\b(?:a|one) (gigabyte|terabyte)\b", _FLAGS), r"1 \1"),
    (re.compile(r"\bsub-?second\b", _FLAGS), "under 1 second"),
    (re.compile(r"\bsub-(\d)", _FLAGS), r"under \1"),
    (re.compile(rf"\b({_EN_WORD}) and a half (hours?|minutes?|seconds?|days?)\b", _FLAGS),
     lambda m: f"{_fmt(_en_to_number(m.group(1)) + 0.5)} {m.group(2)}"),
    (re.compile(rf"\b({_EN_WORD})(?=[- ]?(?:{_EN_UNIT_WORDS}))[- ]?", _FLAGS),
     lambda m: f"{_fmt(_en_to_number(m.group(1)))} "),
    # "an hour", "a minute", "a day" (a second only where it is plainly a duration)
    (re.compile(r"\b(?:an|one) hour\b", _FLAGS), "1 hour"),
    (re.compile(r"\b(?:a|one) (minute|day)\b", _FLAGS), r"1 \1"),
    (re.compile(r"\b(under|within|in|than|below|about|around|max|most|takes?|taking|of|to|inside|tops)\s+(?:a|one)"
                r"\s+second\b", _FLAGS), r"\1 1 second"),
    (re.compile(r"\b(?:a|one) second\b(?=\s*(?:max|maximum|per|each|or less|or under|tops|latency|response"
                r"|to (?:respond|answer|classify|predict)))", _FLAGS), "1 second"),
    # Chinese: 百分之九十五 → 95%, 九成 → 90%, 半小时 → 30分钟, 半秒 → 500毫秒, 一个半小时 → 1.5小时
    # 零点八 → 0.8, 零点九五 → 0.95 (a decimal written in characters)
    (re.compile(r"(?<![\d零〇一二两三四五六七八九十百])零点([零〇一二三四五六七八九]+)"),
     lambda m: "0." + "".join(str(_CN_DIGITS[c]) for c in m.group(1))),
    (re.compile(rf"百分之([{_CN_NUM}点]+|\d+(?:\.\d+)?)"),
     lambda m: (m.group(1) if m.group(1)[0].isdigit() else _fmt(_cn_to_number(m.group(1)) or 0)) + "%"),
    (re.compile(r"([一二三四五六七八九])成([一二三四五六七八九])?(?![\u4e00-\u9fff]{0,1}(?:本|功|员|品|绩|长|交|熟|为|立))"),
     lambda m: f"{_CN_DIGITS[m.group(1)] * 10 + (_CN_DIGITS[m.group(2)] if m.group(2) else 0)}%"),
    (re.compile(rf"([{_CN_NUM}]+|\d+)个半(小时|钟头)"),
     lambda m: _fmt((_cn_to_number(m.group(1)) if not m.group(1).isdigit() else float(m.group(1))) + 0.5) + "小时"),
    (re.compile(r"半个?(?:小时|钟头)"), "30分钟"),
    (re.compile(r"半个?(?:GB|G|吉)(?![A-Za-z])", _FLAGS), "0.5GB"),
    (re.compile(r"半分钟"), "30秒"),
    (re.compile(r"半秒钟?"), "500毫秒"),
    (re.compile(r"半天"), "12小时"),
    # "误差不超过十五个车位", "控制在三单以内": a count after a limit word is a number, whatever it counts
    (re.compile(rf"(不超过|不高于|不大于|不多于|小于|低于|少于|最多|至多|控制在|保持在|差在?|偏离)\s*([{_CN_NUM}]+)"
                r"(?=个|件|台|辆|单|人|次|位|名|张|只|头|箱|包|瓶|套|份|元|块|公斤|斤|吨|度|例|篇|车|床|份)"),
     lambda m: m.group(1) + (_fmt(v) if (v := _cn_to_number(m.group(2))) is not None else m.group(2))),
    (re.compile(rf"([{_CN_NUM}]+(?:点[{_CN_NUM}]+)?)(?=个?(?:小时|钟头|分钟|秒(?!杀)|毫秒|微秒|兆|天|类|种|万|千|G|M|%|人|名|位|辆|件|单|台))"),
     lambda m: _fmt(v) if (v := _cn_to_number(m.group(1))) is not None else m.group(1)),
    (re.compile(r"(\d+(?:\.\d+)?)\s*万"), lambda m: _fmt(float(m.group(1)) * 10000)),
    (re.compile(r"(\d+(?:\.\d+)?)\s*千(?!字节|克|米|瓦)"), lambda m: _fmt(float(m.group(1)) * 1000)),
    (re.compile(r"(\d+(?:\.\d+)?)个(小时|钟头)"), r"\1\2"),
    # "困惑度低于二十", "准确率达到九十五%": a Chinese numeral right after a metric and its comparison is a number
    (re.compile(rf"((?:困惑度|准确率|正确率|召回率|精确率|精准率|F1值?|平均绝对误差|均方根误差|决定系数|MAE|RMSE|R2)(?:值)?(?:要|需要|得|应该|必须)?"
                rf"(?:低于|小于|不超过|不高于|不大于|高于|大于|不低于|不小于|至少|达到|控制在|在|为|是)\s*)([{_CN_NUM}]+)"
                r"(?![点个件台万千百元块%％]|成)"),
     lambda m: m.group(1) + (_fmt(v) if (v := _cn_to_number(m.group(2))) is not None else m.group(2))),
    # "recall九成以上" → "recall 90%以上": a metric's name glued to its figure
    (re.compile(r"(?<![A-Za-z])(recall|precision|accuracy|acc|mae|rmse)(?=\d)", _FLAGS), r"\1 "),
    # compound durations: "1h30m", "1h 30min", "2 hours 15 minutes", "1小时30分钟" → minutes; "1m30s", "1分30秒" → seconds
    (re.compile(r"(?<![\w.])(\d+)\s*(?:h|hrs?|hours?)\s*(?:and\s+)?(\d{1,2})\s*(?:m|mins?|minutes?)(?![a-z])", _FLAGS),
     lambda m: f"{int(m.group(1)) * 60 + int(m.group(2))} minutes"),
    (re.compile(rf"(?<![\d.])(\d+)\s*(?:小时|钟头)\s*(?:零|又)?(\d{{1,2}}|[{_CN_NUM}]{{1,3}})\s*分(?:钟|鐘)?"),
     lambda m: f"{int(m.group(1)) * 60 + int(_digits_or_cn(m.group(2)))}分钟"),
    (re.compile(r"(?<![\w.])(\d+)\s*(?:m|mins?|minutes?)\s*(?:and\s+)?(\d{1,2})\s*(?:s|secs?|seconds?)(?![a-z])", _FLAGS),
     lambda m: f"{int(m.group(1)) * 60 + int(m.group(2))} seconds"),
    (re.compile(r"(?<![\d.])(\d+)\s*分钟?\s*(?:零|又)?(\d{1,2})\s*秒(?!杀)"),
     lambda m: f"{int(m.group(1)) * 60 + int(m.group(2))}秒"),
]


@functools.lru_cache(maxsize=4096)
def normalize(text: str) -> str:
    """The request with full-width forms folded and numbers in words turned into digits."""
    text = unicodedata.normalize("NFKC", text).replace("µ", "μ")
    for pattern, repl in _REPLACEMENTS:
        text = pattern.sub(repl, text)
    return text


# ---------------------------------------------------------------------------------------------
# Targets


def _clause_bounds(text: str) -> list[int]:
    """Start offsets of the clauses of ``text`` (a comma, semicolon, full stop or "but" ends one)."""
    starts = [0]
    for match in _CLAUSE_BREAK.finditer(text):
        starts.append(match.end())
    return starts


def _clause_of(starts: list[int], index: int) -> int:
    lo = 0
    for i, s in enumerate(starts):
        if s <= index:
            lo = i
        else:
            break
    return lo


def _metric_mentions(text: str) -> list[tuple[int, int, int]]:
    found: list[tuple[int, int, int]] = []
    for pattern, metric in _METRIC_RE:
        for match in pattern.finditer(text):
            if any(not (match.end() <= a or match.start() >= b) for a, b, _ in found):
                continue
            found.append((match.start(), match.end(), metric))
    return sorted(found)


def _score_numbers(text: str, train_clauses: set[int], starts: list[int]) -> list[dict]:
    numbers = []
    for number in _NUMBER_RE.finditer(text):
        start, end = number.start(1), number.end()
        # "5个百分点" is a difference of percentages: an error as written (MAE 5), like "5 percentage points"
        percent = bool(number.group(2)) and number.group(2) != "个百分点"
        following = text[end : end + 16]
        if not percent:
            min_max = _MIN_MAX_AFTER.match(following)
            if min_max and _clause_of(starts, start) not in train_clauses:
                numbers.append({"start": start, "end": end, "value": float(number.group(1)), "percent": False,
                                "baseline": False})
                continue
            if _ERROR_UNIT_AFTER.match(following) and _clause_of(starts, start) not in train_clauses:
                # "MAE under 5 years", "误差小于3天": an error's value may carry the quantity's unit
                numbers.append({"start": start, "end": end, "value": float(number.group(1)), "percent": False,
                                "error_only": True, "baseline": _is_baseline(text, start, starts)})
                continue
            if _UNIT_AFTER_RE.match(following) or _NOT_A_SCORE_AFTER.match(following):
                continue
            if re.match(r"\s*(?:-|to|~|–)\s*\d", following):  # a range's first half
                continue
        if _NOT_A_SCORE_BEFORE.search(text[max(0, start - 8) : start]):
            continue
        # "尽量接近100%，至少99.5%", "as close to 100% as we can get": an aspiration to perfection, not a goal (a goal
        # stated beside it is taken, as after a baseline); "nearly 99%" stays a goal
        value = float(number.group(1))
        aspiration = ((value >= 100 or (value == 1.0 and not percent))
                      and _ASPIRATION_BEFORE.search(text[max(0, start - 12) : start]) is not None)
        numbers.append({"start": start, "end": end, "value": value, "percent": percent,
                        "baseline": aspiration or _is_baseline(text, start, starts)})
    return numbers


def _is_baseline(text: str, start: int, starts: list[int]) -> bool:
    """A number stated as where things are now ("we currently have 80%"), or as what someone else reports ("a 2022
    paper reports 97.3%", "同行报告里的MAE是18万"), not as the goal; in Chinese the cue may stand one comma back
    ("现在用的是关键词规则，大概七成准确率")."""
    clause_start = starts[_clause_of(starts, start)]
    if _BASELINE_BEFORE.search(text[max(clause_start, start - 40) : start]):
        return True
    before = text[max(clause_start, start - 60) : start]
    reference = _REFERENCE_BEFORE.search(before)
    if reference and not _REQUIREMENT.search(before[reference.end() :]):
        return True
    if _ONLY_BEFORE_ZH.search(text[max(clause_start, start - 8) : start]) and not _ONLY_IF_AFTER_ZH.match(text, start):
        return True  # "准确率才70%左右", "召回率只有六成": a figure found wanting (not "只有95%以上才能上线")
    return bool(_BASELINE_BEFORE_ZH_SENTENCE.search(text[max(0, start - 30) : start]))


def _stated_as_goal(text: str, starts: list[int], mention: tuple[int, int, int], number: dict) -> bool:
    """Whether the clauses of a metric and its number state a requirement ("at least", "we'd want", "不低于", "目标")."""
    first = _clause_of(starts, min(mention[0], number["start"]))
    last = _clause_of(starts, max(mention[0], number["start"]))
    end = starts[last + 1] if last + 1 < len(starts) else len(text)
    return _GOAL.search(text[starts[first] : end]) is not None


def _metric_value(metric: int, value: float, percent: bool) -> float:
    if percent:
        return value / 100.0
    if metric in _FRACTION_METRICS and value > 1.0:
        return value / 100.0
    return value


def _targets_with_spans(text: str) -> list[tuple[common_pb2.Target, tuple[int, int]]]:
    starts = _clause_bounds(text)
    mentions = _metric_mentions(text)
    if not mentions:
        return _bare_share_goal(text, starts)
    train_clauses = {
        _clause_of(starts, m.start()) for m in _TRAIN_CUE.finditer(text)
    }
    numbers = _score_numbers(text, train_clauses, starts)
    pairs: list[tuple[float, int, int]] = []
    for mi, (m_start, m_end, _metric) in enumerate(mentions):
        clause = _clause_of(starts, m_start)
        for ni, num in enumerate(numbers):
            if _clause_of(starts, num["start"]) != clause:
                continue
            if num.get("error_only") and _metric not in (common_pb2.METRIC_MAE, common_pb2.METRIC_RMSE):
                continue
            if _metric in _FRACTION_METRICS and not num["percent"] and num["value"] > 100:
                continue  # "a 2022 paper reports 97.3% accuracy": no share is above 100
            if num["start"] >= m_end:
                between = (m_end, num["start"])
                distance = num["start"] - m_end
            else:
                between = (num["end"], m_start)
                gap = m_start - num["end"]
                # "95% accuracy", "95%以上准确率": a number just before its metric; farther back, the
                # number more likely belongs to the metric before it ("recall 95% and precision 80%").
                distance = gap if gap <= 3 else gap + 15
                if _NAMES_THE_METRIC.fullmatch(text, num["end"], m_start) and text[m_end : m_end + 3].strip()[:1] == ")":
                    distance = -1  # "right nine times out of ten (precision)": the bracket names the metric
            if any(between[0] <= s < between[1] for s, _e, _m in mentions if s != m_start):
                continue  # another metric stands between them
            if num["baseline"]:
                distance += 40  # today's figure; the goal is the other number if there is one
            pairs.append((distance, mi, ni))
    assigned: dict[int, int] = {}
    used: set[int] = set()
    for _distance, mi, ni in sorted(pairs):
        if mi in assigned or ni in used:
            continue
        assigned[mi] = ni
        used.add(ni)
    # "our accuracy is 80% today, we need 90%": a goal stated in the next clause, with no metric of its own.
    for mi, ni in list(assigned.items()):
        if not numbers[ni]["baseline"]:
            continue
        clause = _clause_of(starts, numbers[ni]["start"])
        for nj, num in enumerate(numbers):
            if nj in used or _clause_of(starts, num["start"]) != clause + 1 or num["baseline"]:
                continue
            if any(_clause_of(starts, s) == clause + 1 for s, _e, _m in mentions):
                break
            if mentions[mi][2] in _FRACTION_METRICS and _ERROR_UNIT_AFTER.match(text, num["end"]):
                continue  # "... churn in the next 30 days": a count of something, not the goal
            assigned[mi] = nj
            used.add(nj)
            break
    # "precision and recall both above 0.8": a metric without a number shares the next one's.
    for mi in range(len(mentions) - 1, -1, -1):
        if mi in assigned or mi + 1 >= len(mentions):
            continue
        if (mi + 1) in assigned and _CONNECTOR.match(text[mentions[mi][1] : mentions[mi + 1][0]]):
            assigned[mi] = assigned[mi + 1]
    # "召回率要高，0.95以上", "recall matters most, 0.9 or better": the number in the next clause, when
    # that clause names no metric of its own.
    for mi, (m_start, _m_end, metric) in enumerate(mentions):
        if mi in assigned:
            continue
        clause = _clause_of(starts, m_start)
        if any(_clause_of(starts, s) == clause + 1 for s, _e, _m in mentions):
            continue
        for nj, num in enumerate(numbers):
            if nj in used or num["baseline"] or _clause_of(starts, num["start"]) != clause + 1:
                continue
            if metric in _FRACTION_METRICS and not num["percent"] and num["value"] > 1.0:
                break
            limit_clause = text[starts[clause + 1] : starts[clause + 2] if clause + 2 < len(starts) else len(text)]
            if _UNIT_AFTER_RE.match(text, num["end"]) and (_LATENCY_CUE.search(limit_clause)
                                                            or _TRAIN_CUE.search(limit_clause)):
                continue  # "均方根误差要小，接口响应控制在0.2秒以内": a limit on the model's answer, not the error
            assigned[mi] = nj
            used.add(nj)
            break
    # A metric read twice: the figure stated as the goal wins over one stated without ("a vendor's add-on gets an MAE
    # of 35 ... we'd want an MAE of 25 or fewer", "准确率才70%左右。我们的目标是准确率不低于90%"); else the first.
    chosen: dict[int, int] = {}
    for mi, (_s, _e, metric) in enumerate(mentions):
        if mi not in assigned or numbers[assigned[mi]]["baseline"]:
            continue  # today's figure is not a goal ("our current model gets 0.87; train a new one")
        if metric not in chosen or (not _stated_as_goal(text, starts, mentions[chosen[metric]], numbers[assigned[chosen[
                metric]]]) and _stated_as_goal(text, starts, mentions[mi], numbers[assigned[mi]])):
            chosen[metric] = mi
    out: list[tuple[common_pb2.Target, tuple[int, int]]] = []
    for mi in sorted(chosen.values()):
        m_start, m_end, metric = mentions[mi]
        num = numbers[assigned[mi]]
        value = _metric_value(metric, num["value"], num["percent"])
        op = "<=" if metric in _LOWER_IS_BETTER else ">="
        span = (min(m_start, num["start"]), max(m_end, num["end"]))
        out.append((common_pb2.Target(metric=metric, op=op, value=round(value, 6)), span))
    return out


def _bare_share_goal(text: str, starts: list[int]) -> list[tuple[common_pb2.Target, tuple[int, int]]]:
    """"Our sorter gets 91% today; we want the model to reach 95%.": with no metric named anywhere, a share the model
    is wanted to reach, standing alone at the end of its clause, is an accuracy."""
    for match in _BARE_SHARE.finditer(text):
        start = match.start(1)
        if _is_baseline(text, start, starts) or not _GOAL.search(text, starts[_clause_of(starts, start)], start):
            continue
        value = float(match.group(1))
        if 0 < value < 100:
            target = common_pb2.Target(metric=common_pb2.METRIC_ACCURACY, op=">=", value=round(value / 100.0, 6))
            return [(target, (match.start(), match.end()))]
    return []


def extract_targets(text: str) -> list[common_pb2.Target]:
    """Metric targets: each metric word paired with the nearest free number in its clause.

    The comparison is the metric's own direction (higher is better for accuracy, f1, precision,
    recall and R2; lower for MAE, RMSE and perplexity), whatever words state it ("no lower than",
    "should not drop below", "不超过", "or better"); percentages become fractions.
    """
    return [t for t, _span in _targets_with_spans(normalize(text))]


# ---------------------------------------------------------------------------------------------
# Constraints


def _nearest_cue(text: str, lo: int, hi: int, at: tuple[int, int], cues: dict[str, re.Pattern[str]]) -> str | None:
    """The cue kind found closest to ``at`` within text[lo:hi]."""
    best: tuple[int, str] | None = None
    segment = text[lo:hi]
    for kind, pattern in cues.items():
        for match in pattern.finditer(segment):
            s, e = lo + match.start(), lo + match.end()
            distance = at[0] - e if e <= at[0] else s - at[1]
            distance = max(distance, 0)
            if best is None or distance < best[0]:
                best = (distance, kind)
    return best[1] if best else None


def _constraint_clause(text: str, start: int, end: int) -> tuple[int, int]:
    lo = max(text.rfind(c, 0, start) for c in ";；。\n!?,，、") + 1
    hi_candidates = [i for c in ";；。\n!?,，、" if (i := text.find(c, end)) >= 0]
    hi = min(hi_candidates) if hi_candidates else len(text)
    # ". " ends a sentence too (but not the dot inside 0.5)
    dot = re.search(r"\.(?:\s|$)", text[end:hi])
    if dot:
        hi = end + dot.start()
    before = list(re.finditer(r"\.(?:\s|$)", text[lo:start]))
    if before:
        lo = lo + before[-1].end()
    return lo, hi


# after "30-second" / "10-minute": a noun of the data, not a limit word
_DESCRIBES_DATA = _rx(
    r"\s*(?!(?:training|train|budget|limit|cap|timeout|time|latency|response|sla|max|maximum|window|run|turnaround"
    r"|deadline|job|search|fit)\b)[a-z]+")
_BASELINE_CLAUSE = _rx(r"\b(?:currently|current|today|right now|at the moment|existing|baseline|legacy|previous)\b"
                       r"|目前|现在|现有|当前|原来|之前|以前|现状")
_SAMPLING_BEFORE = _rx(r"(?:\b(?:every|once every|each)|每隔?|每一)\s*$")
_DESCRIBES_DATA_ZH = re.compile(r"(?:长)?的?(?:窗口|时间窗|滑窗|片段|切片|音频|视频|短视频|录音|录像|语音|信号|波形|样本|间隔|数据)")
_DATA_WINDOW = _rx(r"(?:近|最近|过去|前|未来|接下来|之后|提前|\blast|\bpast|\bprevious|\bprior|\bnext|\bcoming|\bfollowing)\s*$")
# a machine's memory ("8 GB RAM", "32GB内存的服务器", "显存12GB") is not the model's size, unless a limit is put on it
_HARDWARE_MEMORY_AFTER = _rx(
    r"\s*(?:of\s+)?(?:v?ram\b|ddr\d?\b|(?:gpu |video |graphics |system |unified |device )?memory\b|gpus?\b|graphics card"
    r"|(?:的)?(?:内存|显存|运存|运行内存|显卡))")
_HARDWARE_MEMORY_BEFORE = _rx(r"(?:\bv?ram\b|\bmemory\b|内存|显存|运存)\s*(?:of|is|:|只有|才|是|为|有)?\s*$")
_SIZE_LIMIT_BEFORE = _rx(
    r"\b(?:fits?|fitting|under|below|within|at most|max(?:imum)?|less than|no (?:more|bigger|larger) than|up to"
    r"|cap(?:ped)?|limit(?:ed)?|budget|uses?|use at most|takes?|occup\w*|consum\w*)\b|<|≤"
    r"|不超过|不能超过|别超过|小于|低于|不大于|最多|至多|控制在|限制|限定|占用|放进|放得下|装得下|装进|塞进")
_SIZE_LIMIT_AFTER = _rx(r"[^,，;；。]{0,12}?(?:以内|以下|之内|or less|or under|max(?:imum)?\b|at most|tops\b)")
# people doing the work by hand: the time they take is today's cost, not the model's latency
_PERSON_DOES_IT = _rx(
    r"手动|人工|手工|人手|肉眼|质检员|审核员|标注员|老师傅|\bby hand\b|\bmanual(?:ly)?\b"
    r"|\b(?:our |the )?(?:staff|humans?|people|clerks?|agents?|reviewers?|annotators?|operators?|nurses?|doctors?"
    r"|analysts?|employees?|colleagues?|team|dispatchers?|inspectors?)\b(?:[\s\w']{0,20}?)\b(?:takes?|took|spends?|spent"
    r"|needs?|needed)\b")
_TIME_LIMIT = _rx(
    r"\b(?:within|under|below|less than|at most|max(?:imum)?|no more than|must|should|need\w*|requir\w*|has to|have to"
    r"|target|goal|or less|or faster|at the latest)\b|<|≤|内|以下|超过|小于|低于|控制在|要求|需要|必须|最多|至多|最好|得|别|不要")
_MODEL_IN_CLAUSE = _rx(r"\b(?:model|system|classifier|api|endpoint|service|inference|latency)\b|模型|系统|接口|推理|延迟|服务|响应"
                       r"|生成|出结果|返回")
_HORIZON_AFTER = _rx(r"\s*(?:ahead|in advance|into the future|from now|later|out)\b(?!\s+of\b)|(?:之后|以后|后)(?![台端续期])")
_EXPLICIT_TRAIN = _rx(r"\btrain\w*|\bfit(?:ting)?\b(?!\s+(?:in|on|into|within|inside)\b)|\bepochs?\b|训练|调参")


def _machine_memory(text: str, match: re.Match[str], lo: int, hi: int) -> bool:
    """A size that is the memory of the machine the model runs on ("8 GB RAM", "32GB内存的服务器"), with no limit put on
    it ("fit in 512 MB of RAM", "内存占用不超过500MB" are the model's)."""
    before = text[max(lo, match.start() - 24) : match.start()]
    return bool((_HARDWARE_MEMORY_AFTER.match(text, match.end()) or _HARDWARE_MEMORY_BEFORE.search(before))
                and not _SIZE_LIMIT_BEFORE.search(before) and not _SIZE_LIMIT_AFTER.match(text[match.end() : hi]))


def _sentence_start(text: str, start: int) -> int:
    """Where the sentence holding text[start] begins."""
    sentence = max(text.rfind(c, 0, start) for c in "。!?！？;；\n")
    dot = list(re.finditer(r"\.\s", text[max(0, sentence) : start]))
    return max(0, sentence) + (dot[-1].end() if dot else 0)


def _persons_time(text: str, start: int, clause: str) -> bool:
    """A time stated for people doing the work by hand, in a clause that puts no limit on the model."""
    return bool(_PERSON_DOES_IT.search(text[_sentence_start(text, start) : start]) and not _TIME_LIMIT.search(clause)
                and not _MODEL_IN_CLAUSE.search(clause))


def extract_constraints(text: str) -> common_pb2.Constraints:
    """Latency, size and training-time limits: a number with a unit, read with its clause."""
    return _constraints(normalize(text))


def _constraints(text: str, targets_with_spans: list[tuple[common_pb2.Target, tuple[int, int]]] | None = None
                 ) -> common_pb2.Constraints:
    """The constraints of normalised ``text``; ``targets_with_spans``: its targets, when already read."""
    constraints = common_pb2.Constraints()
    found: dict[str, list[tuple[int, float]]] = {"latency": [], "size": [], "train": []}
    if targets_with_spans is None:
        targets_with_spans = _targets_with_spans(text)
    # "MAE below 30 seconds": the number is the error's target, not a limit on the model
    error_spans = [span for target, span in targets_with_spans
                   if target.metric in (common_pb2.METRIC_MAE, common_pb2.METRIC_RMSE)]
    for match in _UNIT_RE.finditer(text):
        if any(lo <= match.start() <= hi for lo, hi in error_spans):
            continue
        unit_index = next(i for i in range(len(_UNITS)) if match.group(f"u{i}"))
        unit = _UNITS[unit_index]
        value = float(match.group(1)) * unit.factor
        lo, hi = _constraint_clause(text, match.start(), match.end())
        clause = text[lo:hi]
        span = (match.start(), match.end())
        kind = unit.kind
        if _DESCRIBES_DATA.match(text, match.end()) and "-" in match.group(0):
            continue  # "30-second EEG epochs", "10-minute clips": what the data is, not a limit
        if _DESCRIBES_DATA_ZH.match(text, match.end()):
            continue  # "每行是一个2秒窗口的均值", "10秒的短视频": what the data is
        if _SAMPLING_BEFORE.search(text[max(0, match.start() - 12) : match.start()]):
            continue  # "a frame every 30 seconds", "每10秒采集一次": how often the data is sampled
        if kind == "seconds":
            cue = _nearest_cue(text, lo, hi, span, {"train": _TRAIN_CUE, "latency": _LATENCY_CUE})
            if cue == "train" and value <= 5 and not _EXPLICIT_TRAIN.search(clause):
                cue = "latency"  # "手机上0.1秒出结果": a few seconds is an answer's time, not a training budget
            kind, value = ("train", value / 60.0) if cue == "train" else ("latency", value * 1000.0)
        elif kind in ("train", "train_day") and _HORIZON_AFTER.match(text, match.end()):
            continue  # "predict server load 10 minutes ahead", "预测2小时后的客流": how far ahead, not a limit
        elif kind in ("train", "train_day") and _DATA_WINDOW.search(text[max(0, match.start() - 12) : match.start()]):
            continue  # "近90天购买次数", "over the last 30 days", "开抢后前10分钟的销量": a window of the data
        elif kind in ("train", "train_day"):
            cue = _nearest_cue(text, lo, hi, span, {"train": _TRAIN_CUE, "latency": _LATENCY_CUE})
            if cue is None and _TIME_LIMIT.search(clause):
                # a bare limit after a comma ("Training has to run overnight, 8 hours max"): its sentence says what
                cue = _nearest_cue(text, _sentence_start(text, lo), hi, span, {"train": _TRAIN_CUE,
                                                                               "latency": _LATENCY_CUE})
            if cue == "latency" and kind == "train":
                if value > 10:
                    continue  # "legal has 48h to respond": a person's deadline, not a model's answer time
                kind, value = "latency", value * 60_000.0
            elif cue == "train":
                kind = "train"
            else:
                continue
        elif kind == "size":
            cue = _nearest_cue(text, lo, hi, span, {"size": _SIZE_CUE, "data": _DATA_CUE})
            if cue == "data":
                continue
            if _machine_memory(text, match, lo, hi):
                continue  # "an old i5 with 8 GB RAM", "RTX 3060（12GB显存）": the machine's memory, not the model's size
        elif kind == "ambiguous_m":
            if _machine_memory(text, match, lo, hi):
                continue
            if _nearest_cue(text, lo, hi, span, {"size": _SIZE_CUE}) and re.search(r"模型|体积|大小|size|model", clause,
                                                                                       _FLAGS):
                kind, value = "size", value * (1024.0 if match.group(0).strip()[-1] in "gG" else 1.0)
            else:
                continue
        if kind == "latency" and _persons_time(text, match.start(), clause):
            continue  # "现在两个客服手动分类，平均每条要花40秒": how long a person takes, not a limit on the model
        priority = 0
        if kind == "latency" and re.search(r"\bp9[59]\b|p95", clause, _FLAGS):
            priority = -1 if re.search(r"\bp95\b", clause, _FLAGS) else 0
        if _BASELINE_CLAUSE.search(text[lo : match.start()]) and not _REQUIREMENT.search(clause):
            priority = 1  # "the current classifier gets 91.4% at 120 ms; ... latency under 40 ms": today's figure
        found[kind].append((priority, round(value, 6)))
    if found["latency"]:
        constraints.max_latency_ms = min(found["latency"], key=lambda p: p[0])[1]
    if found["size"]:
        constraints.max_model_size_mb = found["size"][0][1]
    if found["train"]:
        constraints.max_train_minutes = found["train"][0][1]
    return constraints


# ---------------------------------------------------------------------------------------------
# Task type


def _modality_scores(text: str) -> dict[str, float]:
    scores: dict[str, float] = {}
    for modality, cues in _compiled()["task_cues"].items():
        scores[modality] = sum(weight for weight, pattern in cues if pattern.search(text))
    return scores


_CLASSIFY_INTENT = _rx(
    r"\b(?:classif\w*|categori[sz]\w*|sort\w*|tag\w*|label\w*|route|routing|detect\w*|flag\w*|decide (?:whether|if)"
    r"|tell (?:if|whether)|which (?:of|class|category)|spam|sentiment|positive or negative"
    r"|(?:grade|rate|mark|judge|assess)\w* (?:each|every|the|a|all|our|incoming) (?:[\w-]+ ){0,5}?as)\b"
    r"|分类|分成|判断|识别|检测|属于",
    _FLAGS,
)
_THRESHOLD = {"image": 2, "generation": 3, "text": 2, "tabular": 3}
_FIRM_WRITING = 8  # a generation score the learned reader does not override (task_reader._kept)
_MODALITY_TYPE = {"image": common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION, "generation": common_pb2.TASK_TYPE_TEXT_GENERATION,
                  "text": common_pb2.TASK_TYPE_TEXT_CLASSIFICATION}


def _task_type(text: str, targets: list[common_pb2.Target]) -> tuple[int, bool, bool]:
    """(task type, whether a firm writing cue was read, whether a table's kind was read rather than defaulted): the
    last two are what the learned reader may not override (task_reader._kept)."""
    scores = _modality_scores(text)
    firm_writing = scores.get("generation", 0) >= _FIRM_WRITING
    metrics = {t.metric for t in targets}
    if common_pb2.METRIC_PERPLEXITY in metrics:
        scores["generation"] = scores.get("generation", 0) + 5
    if scores.get("generation", 0) < 5 and _CLASSIFY_INTENT.search(text):
        scores["generation"] = 0
    regression_metric = bool(metrics & {common_pb2.METRIC_MAE, common_pb2.METRIC_RMSE, common_pb2.METRIC_R2})
    if regression_metric and scores.get("tabular", 0) > 0:
        scores["tabular"] = scores["tabular"] + 2
    best, best_score = None, 0.0
    for modality in ("image", "generation", "text", "tabular"):
        score = scores.get(modality, 0)
        if score >= _THRESHOLD[modality] and score > best_score:
            best, best_score = modality, score
    if best is None and regression_metric and scores.get("tabular", 0) >= 1:
        best = "tabular"
    if best is None and targets and _CLASSIFY_INTENT.search(text):
        # it says what to do (classify, detect, 识别) and how well: the strongest modality cue decides
        positive = [(scores.get(m, 0), -i, m) for i, m in enumerate(("image", "generation", "text", "tabular"))]
        score, _, modality = max(positive)
        if score >= 2:
            best = modality
    if best == "tabular":
        kind, kind_read = _tabular_kind(text, metrics)
        return kind, firm_writing, kind_read
    return _MODALITY_TYPE.get(best, common_pb2.TASK_TYPE_UNSPECIFIED), firm_writing, False


_PREDICTED_OBJECT = _rx(
    r"\b(?:predict\w*|forecast\w*|estimat\w*|model\w*|regress\w*|classify|guess\w*|tell)\b\s+(.{0,60}?)"
    r"(?=\s+(?:from|given|using|based on|with|for each|per|for new|by)\b|[,;.(]|$)|(?:预测|估计|估算|判断)(.{0,20}?)(?=[,，。;；]|$)")


_REGRESS_VERB = _rx(r"\bregress(?:es|ed|ing)?\b(?! (?:tests?|suites?))|\b(?<!logistic )regression (?:of|on)\b")


def _tabular_kind(text: str, metrics: set[int]) -> tuple[int, bool]:
    """(classification or regression, whether it was read from the metrics, a regression verb or what is predicted,
    rather than from a cue anywhere in the request or the default)."""
    compiled = _compiled()
    regression = metrics & {common_pb2.METRIC_MAE, common_pb2.METRIC_RMSE, common_pb2.METRIC_R2}
    classification = metrics & {common_pb2.METRIC_ACCURACY, common_pb2.METRIC_F1, common_pb2.METRIC_PRECISION,
                                common_pb2.METRIC_RECALL}
    if regression and not classification:
        return common_pb2.TASK_TYPE_TABULAR_REGRESSION, True
    if classification and not regression:
        return common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION, True
    if _REGRESS_VERB.search(text):
        return common_pb2.TASK_TYPE_TABULAR_REGRESSION, True  # "regress approved loan amount on income, debt, ..."
    # No deciding metric: read what is predicted ("predict whether ..." vs "predict the price ...").
    for match in _PREDICTED_OBJECT.finditer(text):
        obj = match.group(1) or match.group(2) or ""
        if _any(compiled["classification"], obj):
            return common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION, True
        if _any(compiled["regression"], obj):
            return common_pb2.TASK_TYPE_TABULAR_REGRESSION, True
    if _any(compiled["classification"], text):
        return common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION, False
    if _any(compiled["regression"], text):
        return common_pb2.TASK_TYPE_TABULAR_REGRESSION, False
    return common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION, False


def detect_task_type(text: str) -> int:
    norm = normalize(text)
    return _read_task(text, norm, [t for t, _ in _targets_with_spans(norm)])[0]


def rule_task_reading(text: str, norm: str, targets: list[common_pb2.Target]):
    """What the rules alone read of the task: type, vague pattern, a table with nothing said, the metrics."""
    from services.task.task_reader import RuleReading

    task_type, firm_writing, kind_read = _task_type(norm, targets)
    table_vague = False
    if task_type in (common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION, common_pb2.TASK_TYPE_TABULAR_REGRESSION):
        label_column, input_columns = extract_columns(text)
        # a table and nothing said about what to learn from it ("train something on my spreadsheet")
        table_vague = not label_column and not input_columns and not _any(_compiled()["task_verbs"], norm)
    return RuleReading(task_type, _any(_compiled()["vague"], norm) is not None, table_vague,
                       frozenset(t.metric for t in targets), bool(_CLASSIFY_INTENT.search(norm)), firm_writing,
                       kind_read)


def _read_task(text: str, norm: str, targets: list[common_pb2.Target]) -> tuple[int, bool]:
    """(task type, clarify): the rules' reading, joined by the learned reader (services/task/task_reader.py,
    ``TRAINERAGENT_TASK_READER``); the explicit ``vague`` patterns always ask."""
    from services.task import task_reader

    return task_reader.combine(text, rule_task_reading(text, norm, targets))


# ---------------------------------------------------------------------------------------------
# Review


# Certainty the request says it does NOT ask for ("不用零误差，MAE 0.02以内就行", "当然不可能精确到分",
# "注意不是要预测号码", "no need for exact figures", "we know it won't be exact", "接近百分之百，至少99.5%"): masked before the
# infeasibility rules read the request. Never "never wrong" or "not a single error": those ask for certainty.
_NOT_ASKED = _rx(
    r"(?:不用|不要求|不需要|不必|不可能|不是要|并不是要|并非|没必要|无需|不求|当然不|做不到|接近|近乎|趋近|尽量接近)"
    r"[^，。；,;!?！？]{0,8}?(?:零误差|零延迟|精确|准确无误|百分之百|100%|预测(?:中奖)?号码|一点误差都没有|分毫不差)"
    r"|\b(?:no need (?:for|to be)|(?:does ?n[o']t|do ?n[o']t) (?:need|have) to be|needn't be|not required to be|not looking for"
    r"|rather than|instead of|not trying to|is ?n[o']t about|(?:as )?close (?:as possible )?to|nearly|approaching"
    r"|(?:won'?t|will not|can'?t|cannot|could ?n[o']t|is ?n[o']t going to|are ?n[o']t going to|never going to) (?:ever )?be)\s+"
    r"(?:\w+\s+){0,2}?(?:exact\w*|precise\w*|perfect\w*|100 ?%|zero (?:error|latency)|predict\w* (?:the )?(?:winning )?numbers)"
)


_LINE_BREAKS = re.compile(r"[ \t]*(?:\r?\n)+[ \t]*")


def _review_text(text: str) -> str:
    """The request as the review reads it: normalised, its lines joined as sentences ("· 用户上传任意真人照片\n· 模型
    输出成人向图片" is one request whose harm spans two bullet points; a pattern's ``.`` does not cross a line break)."""
    return _LINE_BREAKS.sub("; ", normalize(text).strip())


@dataclass(frozen=True)
class _Reading:
    """What the review reads of one request, once: the normalised text joined into one line, and whether it
    matches a look-alike, a protective purpose, consent or anonymity, or evasion (see the knowledge file)."""

    norm: str
    lookalike: bool
    protective: bool
    consent: bool
    evasion: bool


def _read_for_review(text: str) -> _Reading:
    norm = _review_text(text)
    compiled = _compiled()
    undescribed = compiled["evasion_described"].sub(" ", norm)  # the attack a detector looks for is no evasion
    return _Reading(norm, _any(compiled["lookalikes"], norm) is not None,
                    compiled["protective"].search(norm) is not None, compiled["consent"].search(norm) is not None,
                    compiled["evasion"].search(undescribed) is not None)


def review(text: str) -> tuple[int, str] | None:
    """(reject_reason, explanation) when the request must be refused, else None.

    Unethical before infeasible. The review reads the whole request whatever its task type, and
    nothing in the request ("ignore the rules", "skip the review") turns it off.
    """
    return _review(_read_for_review(text))


def _review(reading: _Reading) -> tuple[int, str] | None:
    norm = reading.norm
    compiled = _compiled()
    harmless = reading.lookalike and not reading.evasion
    for entry in compiled["unethical"]:
        if entry["lookalike_exempt"] and harmless:
            continue
        if _any(entry["unless"], norm):
            continue
        if _matches(entry["rules"], norm, entry["scope"]):
            return common_pb2.REJECT_REASON_UNETHICAL, f"Refused ({_plain(entry['category'])}): {entry['explanation']}."
    plain = _NOT_ASKED.sub(" ", norm)  # "不用零误差", "no need for exact figures": certainty not asked for
    for entry in compiled["infeasible"]:
        if _any(entry["unless"], plain):
            continue
        if _matches(entry["rules"], plain, entry["scope"]):
            return common_pb2.REJECT_REASON_INFEASIBLE, f"Not possible ({_plain(entry['category'])}): {entry['explanation']}."
    return _impossible_numbers(norm)


def review_inputs(text: str) -> tuple[tuple[int, str] | None, bool]:
    """The phrase rules' verdict and whether a refusal by the learned layers is in doubt: the request is framed
    as a detector of the harm (:func:`protective_framing`), or the rules let it through and it states consent
    or anonymity (:func:`exempted`; that never lifts the rules' own refusal). What the semantic review is given,
    by the brain and by scripts/build_review_bank.py alike."""
    reading = _read_for_review(text)
    verdict = _review(reading)
    doubt = not reading.evasion and (reading.lookalike or reading.protective or (verdict is None and reading.consent))
    return verdict, doubt


def full_review(text: str) -> tuple[int, str] | None:
    """The rule brain's review: the phrase rules, and the semantic review beside them when it is on
    (services/task/semantic_review.py, ``TRAINERAGENT_SEMANTIC_REVIEW``)."""
    from services.task import semantic_review

    if not semantic_review.enabled():
        return review(text)
    verdict, doubt = review_inputs(text)
    return final_verdict(text, verdict, semantic_review.review(text, verdict, doubt))


def final_verdict(text: str, rule_verdict: tuple[int, str] | None,
                  combined: tuple[int, str] | None) -> tuple[int, str] | None:
    """What the rules keep of the learned layers' verdict: a rule's unethical refusal of a request that evades a
    detector ("varied enough to slip past the marketplace's fake-review detector") is never lifted, whatever the
    layers say of its detector words; then :func:`unfounded_infeasible_dropped`."""
    if (rule_verdict is not None and rule_verdict[0] == common_pb2.REJECT_REASON_UNETHICAL
            and _read_for_review(text).evasion):
        return rule_verdict
    return unfounded_infeasible_dropped(text, rule_verdict, combined)


def unfounded_infeasible_dropped(text: str, rule_verdict: tuple[int, str] | None,
                                 combined: tuple[int, str] | None) -> tuple[int, str] | None:
    """The review's verdict, less a refusal of infeasibility that only the learned layers make when the request
    allows an error ("tomorrow's closing price, RMSE under 2 dollars") or asks for a probability ("the chance of an
    aftershock in the next 7 days"), forecasting with a tolerance being ordinary (the rules refuse certainty), or
    has no word of certainty, chance, the future, minds or the supernatural in it."""
    if (rule_verdict is None and combined is not None and combined[0] == common_pb2.REJECT_REASON_INFEASIBLE
            and (_error_tolerance(text) or _asks_probability(text) or not _could_ask_the_impossible(text))):
        return None
    return combined


def _could_ask_the_impossible(text: str) -> bool:
    """The request has a word without which no request asks for the impossible (the knowledge file's
    ``impossibility_cue``, and ``impossibility_cue_zh`` for a Chinese request)."""
    from services.task import semantic_review

    cue = "impossibility_cue_zh" if semantic_review.is_chinese(text) else "impossibility_cue"
    return _compiled()[cue].search(normalize(text)) is not None


def _error_tolerance(text: str) -> bool:
    """The request states an error it will accept (an MAE or RMSE target above zero)."""
    return any(t.metric in (common_pb2.METRIC_MAE, common_pb2.METRIC_RMSE) and t.value > 0
               for t, _span in _targets_with_spans(normalize(text)))


_PROBABILITY = _rx(r"\b(?:probabilit(?:y|ies)|likelihood|how likely|chances? (?:of|that)|calibrated|odds)\b|概率|可能性|几率|多大可能")
_NOT_A_PROBABILITY = _rx(r"\bnot (?:a |just )?(?:probabilit\w*|likelihood|odds)\b|\bdefinite\w*|(?:不要|不是|不需要|别给)(?:什么)?(?:概率|可能性)")


def _asks_probability(text: str) -> bool:
    """The request asks for a probability and for no certainty ("estimate the probability of an M4+ aftershock",
    "给出明天下雨的概率就行，不要求百分之百准"); "不要概率，要确定的时间" asks for certainty."""
    norm = normalize(text)
    if not _PROBABILITY.search(norm) or _NOT_A_PROBABILITY.search(norm):
        return False
    return not _compiled()["certainty"].search(_NOT_ASKED.sub(" ", norm))


def protective_framing(text: str) -> bool:
    """The request detects, flags, filters, moderates or audits a harm (the look-alike and protective-purpose
    patterns of the knowledge file) and says nothing about evading that detection: a refusal of it is in doubt."""
    reading = _read_for_review(text)
    return not reading.evasion and (reading.lookalike or reading.protective)


def exempted(text: str) -> bool:
    """Consent or anonymity stated ("the union signed off", "not linked to anyone's name", "双方都已授权"):
    evidence against a refusal only the learned layers would make, never against the rules' own."""
    reading = _read_for_review(text)
    return not reading.evasion and reading.consent


def _plain(category: str) -> str:
    return category.replace("_", " ")


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|[。！？；\n]+")


def review_windows(text: str) -> list[str]:
    """The parts of a request the review reads alone: two consecutive sentences of its review text."""
    return _sentences(_review_text(text))


def _sentences(text: str) -> list[str]:
    """The request cut into sentences, each joined with the next (a concept and its object may straddle a
    full stop: "Scan their posts. Reject the ones who ...")."""
    parts = [p for p in _SENTENCE_END.split(text) if p and p.strip()]
    if len(parts) <= 1:
        return [text]
    return [a + " " + b for a, b in zip(parts, parts[1:], strict=False)]


def _matches(rules: list[list[re.Pattern[str]]], text: str, scope: str = "request") -> bool:
    """A rule matches when all its patterns match: anywhere in the request (scope ``request``), or
    within one window of two consecutive sentences (scope ``sentence``)."""
    windows = [text] if scope == "request" else _sentences(text)
    return any(all(p.search(window) for p in rule) for rule in rules for window in windows)


def _impossible_numbers(norm: str) -> tuple[int, str] | None:
    """Targets and limits that no model can meet: a perfect score, zero error, zero latency."""
    for target, _span in _targets_with_spans(norm):
        perfect = target.metric in _FRACTION_METRICS - {common_pb2.METRIC_R2} and target.value >= 1.0
        zero_error = target.metric in (common_pb2.METRIC_MAE, common_pb2.METRIC_RMSE) and target.value == 0.0
        if perfect or zero_error:
            return (
                common_pb2.REJECT_REASON_INFEASIBLE,
                "Not possible (perfect score): a perfect score on real-world inputs is impossible in principle; "
                "state a target below 100% (or an error above 0).",
            )
    constraints = _constraints(norm)
    if constraints.HasField("max_latency_ms") and constraints.max_latency_ms == 0:
        return (
            common_pb2.REJECT_REASON_INFEASIBLE,
            "Not possible (zero latency): every computation takes time; state a latency above 0 ms.",
        )
    return None


# ---------------------------------------------------------------------------------------------
# Labels and columns

_LABEL_WORD = r"[\w][\w\-']*(?:\s[\w][\w\-']*){0,2}"
_EN_LIST = re.compile(
    r"\b(?:into|as|between|among|either|labels?|classes|categories|queues|buckets?|types|groups|bins)\s*[:(]?\s*"
    r"(?:the\s+)?(?:(?:\w+\s+)?(?:classes|queues|categories|groups|labels|buckets?|types|patterns|tiers)\s*[:(]\s*)?"
    rf"((?:{_LABEL_WORD}\s*,\s*)+{_LABEL_WORD}\s*,?\s*(?:and|or)\s+{_LABEL_WORD}|{_LABEL_WORD}\s+(?:or|and|vs\.?|versus)\s+{_LABEL_WORD})"
    r"(?=\s*(?:[.;:)]|,\s|$|\s(?:with|at|and|using|from|so|for|in|on|to|accuracy|f1|precision|recall)\b))",
    _FLAGS,
)
_COLON_LIST = re.compile(rf":\s*((?:{_LABEL_WORD}\s*,\s*){{2,}}{_LABEL_WORD})\s*(?=[.;)]|$)", _FLAGS)
_PAREN_LIST = re.compile(r"\(([^()]{1,120})\)")
_VS_LIST = re.compile(rf"\b({_LABEL_WORD}(?:\s+(?:vs\.?|versus)\s+{_LABEL_WORD})+)\b", _FLAGS)
_IS_X_OR_Y = re.compile(
    r"\b(?:is|are|as|whether (?:\w+\s+){0,6}?(?:is|are))\s+(\w[\w\-]*)\s+or\s+(\w[\w\-]*)(?=\s*[,.;:)]|\s*$)", _FLAGS
)
_CN_LIST = re.compile(r"(?:分成|分为|分到|归为|是)([^,。;:()]{1,60}?)(?:[一二三四五六七八九十\d]+(?:类|种|个类别)|还是([^,。;:()]{1,12}))")
_LABEL_CONTEXT = _rx(
    r"\b(?:classif\w*|categor\w*|buckets?|class(?:es)?|labels?|types?|tiers?|groups?|columns?|defects?|into|as|sort\w*"
    r"|segments?|kinds?)\b[^()]{0,20}$|(?:分类|类别|缺陷|类型|分成|分为|种类|病害|等级)[^()]{0,10}$"
)
_STOP_LABELS = {"a", "an", "the", "it", "not", "other things", "more", "less", "better", "higher", "lower"}


def _split_items(body: str) -> list[str]:
    parts = re.split(r"\s*(?:,|、|/|\bvs\.?|\bversus\b|\band\b|\bor\b|和|与|及|或者|或|还是)\s*", body, flags=_FLAGS)
    return [p.strip(" .'\"`") for p in parts if p and p.strip(" .'\"`")]


def extract_labels(text: str) -> list[str]:
    """Class names listed in the request: "into billing, outage, account or other", "(yes/no)", "A vs B"."""
    norm = normalize(text)
    candidates: list[list[str]] = []
    for match in _PAREN_LIST.finditer(norm):
        body = match.group(1)
        if re.search(r"\d+\s*(?:classes|categories|types|cards|species)|`|\b(?:e\.g|i\.e|abandoned|like)\b|=", body,
                     _FLAGS):
            continue
        if not re.search(r"[,、/]|\bvs\b|\bor\b", body):
            continue
        items = _split_items(body)
        if not (2 <= len(items) <= 30 and all(len(i) <= 30 and len(i.split()) <= 3 for i in items)):
            continue
        # a list of classes, not of examples: "(yes/no)", "bucket (low, mid, high)", "缺陷（气孔、裂纹）"
        slash_or_vs = re.search(r"/|\bvs\b", body) is not None
        named = _LABEL_CONTEXT.search(norm[max(0, match.start() - 30) : match.start()]) is not None
        short = len(items) >= 3 and all(len(i.split()) <= 2 for i in items)
        if slash_or_vs or named or short:
            candidates.append(items)
    for pattern in (_EN_LIST, _COLON_LIST, _VS_LIST):
        for match in pattern.finditer(norm):
            items = _split_items(match.group(1))
            if len(items) >= 2:
                candidates.append(items)
    for match in _CN_LIST.finditer(norm):
        body = match.group(1) + ("还是" + match.group(2) if match.group(2) else "")
        items = _split_items(body)
        if len(items) >= 2:
            candidates.append(items)
    match = _IS_X_OR_Y.search(norm)
    if match:
        candidates.append([match.group(1), match.group(2)])
    for items in candidates:
        items = [re.sub(r"^(?:either|the|a|an)\s+", "", i, flags=_FLAGS) for i in items]
        if any(i in _STOP_LABELS for i in items):
            continue
        return items
    return []


_IDENT = r"`[^`]{1,60}`|[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+|[A-Za-z][A-Za-z0-9]{0,30}|[\u4e00-\u9fff]{1,6}"
_LABEL_COLUMN = [
    re.compile(r"(?:the\s+)?`([^`]{1,60})`\s+(?:column|field|target|label)", _FLAGS),
    re.compile(r"\b(?:column|field|target(?: column)?|label(?: column)?)\s*(?:is|:|=|called|named)?\s*`([^`]{1,60})`", _FLAGS),
    re.compile(r"\b(?:predict|forecast|estimate|classify|model)\s+(?:the\s+)?([A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+)\s+column\b",
               _FLAGS),
    re.compile(r"(?:预测|估计|判断)\s*`?([A-Za-z_][\w]*)`?\s*(?:列|字段|这一列)"),
    re.compile(r"\b(?:predict|forecast|estimate|classify)\b[^.;]{0,80}?`([^`]{1,60})`(?=[^.;]{0,80}?\b(?:from|given|using|based on)\b)",
               _FLAGS),
    re.compile(r"\b(?:predict|forecast|estimate)\s+(?:the\s+)?`([^`]{1,60})`", _FLAGS),
]


_EN_IDENT = r"`[^`]{1,60}`|[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+|[A-Za-z][A-Za-z0-9]{0,30}"
_ZH_IDENT = r"`[^`]{1,60}`|[A-Za-z][A-Za-z0-9_]{0,40}|[\u4e00-\u9fff]{1,6}?"
_COLUMN_LISTS = [
    re.compile(
        r"\b(?:from|given|using|based on|with (?:the )?(?:features?|columns?)|(?:features?|columns?|inputs?)\s*:)\s+"
        rf"((?:{_EN_IDENT})(?!\.[A-Za-z0-9])(?!\w)(?:\s*,\s*(?:and\s+)?(?:{_EN_IDENT})(?!\.[A-Za-z0-9])(?!\w))*"
        rf"(?:\s*,?\s*(?:and|&)\s+(?:{_EN_IDENT})(?!\.[A-Za-z0-9])(?!\w))?)",
        _FLAGS,
    ),
    re.compile(
        r"(?:用|根据|基于|利用|通过)\s*(?:(?:[A-Za-z0-9_.\-]+|[\u4e00-\u9fff]{1,8}?)\s*(?:里的|中的|表的))?\s*"
        rf"((?:{_ZH_IDENT})(?:\s*、\s*(?:{_ZH_IDENT}))+(?:\s*(?:和|与|及|以及)\s*(?:{_ZH_IDENT}))?"
        rf"|(?:{_ZH_IDENT})\s*(?:和|与|及|以及)\s*(?:{_ZH_IDENT}))(?=\s*(?:等|这些|几个|三个|四个|字段|列|特征|数据)?\s*(?:来|去)?(?:预测|判断|估计|估算|识别|检测|,|。|$))",
    ),
]


def _columns_from(body: str) -> list[str]:
    parts = re.split(r"\s*(?:,|、|/|\band\b|和|与|以及|及)\s*", body, flags=_FLAGS)
    items = [p.strip().strip("`") for p in parts if p.strip()]
    return items


def extract_columns(text: str) -> tuple[str | None, list[str]]:
    """(label_column, input_columns) a tabular request names: "predict `churned` from age, plan and tenure"."""
    norm = normalize(text)
    label = None
    for pattern in _LABEL_COLUMN:
        match = pattern.search(norm)
        if match:
            label = match.group(1).strip("`")
            break
    inputs: list[str] = []
    for match in (m for pattern in _COLUMN_LISTS for m in pattern.finditer(norm)):
        body = match.group(1)
        items = _columns_from(body)
        identifier_like = all(
            "`" in body or "_" in i or re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,30}|[\u4e00-\u9fff]{1,6}", i) for i in items
        )
        plain_words = [i for i in items if re.fullmatch(r"[A-Za-z]+", i)]
        if len(items) < 2 and "`" not in body:
            continue
        if not identifier_like or any(i.lower() in ("the", "their", "its", "a", "an", "our", "my") for i in plain_words):
            continue
        if label and label in items:
            items = [i for i in items if i != label]
        inputs = items
        break
    if not inputs:
        # a parenthesised list of columns after a table or data word: "login table (`src_ip`, `attempts`)"
        match = re.search(r"(?:table|data|dataset|log|records|数据|流水|表)\s*\(([^()]{1,120})\)", norm, _FLAGS)
        if match:
            items = _columns_from(match.group(1))
            if len(items) >= 2 and all(len(i) <= 30 and len(i.split()) == 1 for i in items):
                inputs = items
    return label, inputs


# ---------------------------------------------------------------------------------------------
# The whole reading


def read_request(text: str) -> common_pb2.TaskSpec:
    """The rule brain's TaskSpec for a request."""
    spec = common_pb2.TaskSpec(brain=common_pb2.BRAIN_RULES)
    refusal = full_review(text)
    if refusal:
        spec.decision = common_pb2.DECISION_REJECT
        spec.reject_reason, spec.explanation = refusal
        return spec
    norm = normalize(text)
    targets_with_spans = _targets_with_spans(norm)
    targets = [t for t, _ in targets_with_spans]
    spec.task_type, vague = _read_task(text, norm, targets)
    spec.targets.extend(targets)
    spec.constraints.CopyFrom(_constraints(norm, targets_with_spans))
    tabular = spec.task_type in (common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION, common_pb2.TASK_TYPE_TABULAR_REGRESSION)
    label_column, input_columns = extract_columns(text) if tabular else (None, [])
    labels = extract_labels(text)
    if tabular:
        labels = [label for label in labels if label not in input_columns]
    spec.labels.extend(labels)
    if label_column:
        spec.label_column = label_column
    spec.input_columns.extend(input_columns)
    if vague or spec.task_type == common_pb2.TASK_TYPE_UNSPECIFIED:
        spec.decision = common_pb2.DECISION_CLARIFY
        spec.explanation = "The request does not say what the model should learn; please answer the questions."
        spec.questions.extend(
            [
                common_pb2.Question(
                    id="task",
                    text="What should the model predict, from what input? "
                    "(e.g. 'classify product photos into 5 defect types')",
                ),
                common_pb2.Question(
                    id="task_type",
                    text="Which kind of task is it?",
                    choices=[
                        "image_classification",
                        "text_classification",
                        "text_generation",
                        "tabular_classification",
                        "tabular_regression",
                    ],
                ),
                common_pb2.Question(
                    id="targets",
                    text="What quality does it need (e.g. 'accuracy at least 90%') and how fast must it answer?",
                ),
            ]
        )
        return spec
    spec.decision = common_pb2.DECISION_ACCEPT
    spec.explanation = _accept_explanation(spec)
    return spec


def _accept_explanation(spec: common_pb2.TaskSpec) -> str:
    from services.common.jsonfmt import enum_to_json

    task = enum_to_json(common_pb2.TaskType.DESCRIPTOR, spec.task_type)
    parts = [
        f"{enum_to_json(common_pb2.Metric.DESCRIPTOR, t.metric)} {t.op} {t.value:g}" for t in spec.targets
    ]
    c = spec.constraints
    if c.HasField("max_latency_ms"):
        parts.append(f"p95 latency <= {c.max_latency_ms:g} ms")
    if c.HasField("max_model_size_mb"):
        parts.append(f"model size <= {c.max_model_size_mb:g} MB")
    if c.HasField("max_train_minutes"):
        parts.append(f"training <= {c.max_train_minutes:g} min")
    goals = "; ".join(parts) if parts else "no explicit targets (best effort)"
    return f"Accepted as {task}: {goals}."
