"""Text stage: rewrite one step's narration into a document-ready `StepText`.

Narrators describe what they do in the first person ("Now I'm navigating to the
EC2 dashboard"), while an SOP needs one imperative per step ("Navigate to the
EC2 dashboard."). The rewrite is rule based, with no language model, so a
build is fast, offline and byte-for-byte reproducible:

1. Normalise each narration string (apostrophes, disfluencies) and split it
   into sentences; speech recognisers may emit lowercase or unpunctuated text,
   so every rule is case-insensitive and tolerant of missing punctuation.
2. Give each sentence a role from cue phrases: warning ("be careful", "make
   sure", "never"), verify ("confirm that", "to check"), tip ("you can also").
   A bare caution such as "Be careful here." carries no content of its own, so
   it marks the neighbouring statement as the warning and is dropped.
3. Parse each sentence's shape: a first-person action (subject, auxiliaries,
   verb), an imperative, a "the X is VALUE" setting, or a plain statement.
4. Choose the instruction sentence by shape and role (a first-person action
   beats an imperative beats a setting beats a statement; plain actions beat
   checks beat cautions; the last one wins ties), and rewrite it: drop
   discourse markers, subject and auxiliaries, and put the verb in its base
   form with lemminflect, keeping the rest of the words verbatim so commands
   and product names survive untouched.
5. The other sentences with a role become callouts; the kind follows from the
   instruction's own role first, then from any warning, then from whether the
   screen changed.
6. Commands, versions, quoted strings and identifiers named anywhere in the
   narration become `inputs`.

Empty narration: a step whose screen changed gets the placeholder instruction
"Review the screen shown." with kind "action" (the screenshot carries the
step); a step with neither narration nor change gets "" with kind "note".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Optional, Sequence

from lemminflect import getAllInflections, getAllLemmas, getInflection, getLemma

from .model import Callout, StepText

__all__ = ["describe_step", "warm_up", "MAX_INSTRUCTION_CHARS", "EMPTY_VISUAL_INSTRUCTION"]

MAX_INSTRUCTION_CHARS = 200
EMPTY_VISUAL_INSTRUCTION = "Review the screen shown."

# ---------------------------------------------------------------- vocabulary

# Discourse markers dropped at the start of a sentence whenever a space or
# comma follows ("So first I ...", "Okay, we ..."); regex fragments, so "now that"
# (a time clause) is spared.
_LOOSE_FILLERS = (
    "first of all", "after that", "after this", "at this point", "all right", "alright",
    "okay", "ok", "so", "now(?!\\s+that\\b)", "and", "then", "first", "next up", "next", "finally", "lastly",
    "before you start", "before we start", "before you begin", "before we begin",
    "to begin with", "to start with", "to start", "to begin", "once that's done",
    "once that is done", "as you can see", "as we can see", "secondly", "thirdly", "please",
    # ordinals open a step only when the narrator's subject follows ("Last I post ...")
    "(?:last|second|third|then finally)(?=\\s+(?:i|we)\\b)",
)
# Words that only act as markers when a comma follows ("Right, I ..." but not
# "Right-click ..." or "Good practice is ...").
_COMMA_FILLERS = (
    "right", "well", "good", "great", "cool", "perfect", "yes", "yeah", "oh", "basically",
    "actually", "also", "here", "so now", "and now", "last", "for the record",
)
_FILLER_RE = re.compile(
    r"^(?:(?:" + "|".join(sorted(_LOOSE_FILLERS, key=len, reverse=True)).replace(" ", r"\s+")
    + r")(?=[\s,.!?]|$)"
    + r"|(?:" + "|".join(sorted(map(re.escape, _COMMA_FILLERS), key=len, reverse=True))
    + r")(?=\s*,)"
    + r"|here(?=\s+(?:i|we|you|let's)\b))[\s,]*",
    re.IGNORECASE,
)
# Where a recogniser dropped the full stop: "... in-flight requests now I restart ...".
# Not "so" ("so I can") or "then" ("X and then I Y"): those join clauses of one action.
_UNPUNCTUATED_BREAK_RE = re.compile(
    r"(?<=[a-z0-9])\s+(?=(?:now|okay|ok|alright|next|finally)\s+(?:i|we|let's|i'm|i'll|we'll|we're)\b)",
    re.IGNORECASE)
_TRAILING_FILLER_RE = re.compile(
    r"(?:,?\s+(?:please|right now|now|real quick|for now|okay|ok))+\s*(?=[.!?]*$)", re.IGNORECASE)
_DISFLUENCY_RE = re.compile(r",?\s*\b(?:um+|uh+|erm|uhm|hmm+|er)\b,?(?=\s|$)", re.IGNORECASE)

# Subjects that introduce the narrator's own action, and the auxiliary they
# fold in when contracted.
_SUBJECTS = frozenset({"i", "we", "you", "let's", "lets"})
_SUBJECT_CONTRACTIONS = MappingProxyType({
    "i'm": "be", "im": "be", "we're": "be", "you're": "be",
    "i'll": "", "we'll": "", "you'll": "", "i'd": "", "we'd": "", "you'd": "",
    "i've": "have", "we've": "have", "you've": "have",
})
_LET_SUBJECT_OBJECTS = frozenset({"us", "me"})
_MODALS = frozenset({"will", "would", "can", "could", "should", "must", "shall", "may", "might",
                     "gonna", "wanna", "gotta", "'ll"})
_TO_AUXILIARIES = frozenset({"going", "want", "wanted", "need", "needs", "have", "has", "got",
                             "like", "try", "trying", "able", "supposed", "about", "hoping"})
_ADVERBS = frozenset({"just", "also", "now", "then", "simply", "first", "next", "quickly", "finally",
                      "basically", "actually", "really", "again", "briefly", "here"})
_LOCATION_PREPS = frozenset({"in", "on", "at", "into", "inside", "onto"})
# First-person words left in a rewritten sentence, as the reader would say them.
_READER_PRONOUNS = MappingProxyType({
    "i": "you", "i'm": "you're", "i've": "you've", "i'll": "you'll", "i'd": "you'd", "my": "your",
    "we": "you", "we're": "you're", "we've": "you've", "we'll": "you'll", "we'd": "you'd",
})
_READER_RE = re.compile(r"(?<![\w'])(" + "|".join(map(re.escape, _READER_PRONOUNS)) + r")(?![\w'])",
                        re.IGNORECASE)
# Verbs that report what the narrator thinks or sees rather than what to do.
_MENTAL_VERBS = frozenset({"think", "believe", "guess", "know", "see", "notice", "hope", "expect",
                           "assume", "suppose", "feel", "mean", "wonder", "realize", "realise",
                           "understand", "be", "have"})
_FUNCTION_WORDS = frozenset(
    "a an the this that these those it its their his her our your my to of for from with by in on "
    "at as and or but if so not no is are was were be been am do does did has have had will would "
    "can could should shall may might must there here what which who whom whose when where why how "
    "all any some each every both either neither i we you he she they me us him them".split())
_SUBORDINATORS = ("as soon as", "now that", "whenever", "while", "when", "once", "after", "before",
                  "if", "until", "since", "because", "as", "unless", "whilst")
_PREPOSITIONS = ("back in", "back on", "over in", "up in", "in", "on", "from", "at", "inside",
                 "within", "under", "via", "using", "with", "through", "on top of")
_SUBORDINATE_RE = re.compile(r"^(?:" + "|".join(_SUBORDINATORS) + r")\b", re.IGNORECASE)
_PREFIX_RE = re.compile(r"^(?:" + "|".join(_SUBORDINATORS + _PREPOSITIONS) + r")\b", re.IGNORECASE)

# Nouns naming a setting, so that "The hotfix version is 5.2.1" reads as a value to set.
_SETTING_NOUNS = frozenset(
    "name version value number size type count capacity region zone tag port replicas image "
    "namespace label password username user branch key id url path limit timeout environment env "
    "title description address host hostname domain email amount percentage threshold".split())

_NUMBER_WORDS = MappingProxyType({
    **{w: i for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split())},
    **{w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())},
})
_NUM = r"(?:\d+|(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[\s-](?:one|two|three|" \
       r"four|five|six|seven|eight|nine))?|zero|one|two|three|four|five|six|seven|eight|nine|ten|" \
       r"eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen)"

# ----------------------------------------------------------------- roles

_TIP_RE = re.compile(
    r"^(?:pro\s+)?tip\b|\byou (?:can|could|may) also\b|\boptionally\b|\balternatively\b"
    r"|\bif you prefer\b|\bif you like\b", re.IGNORECASE)
_CAUTION_RE = re.compile(
    r"\b(?:be careful|careful|make sure|ensure|warning|caution|do not|don't|dont|never|danger"
    r"|dangerous|irreversible|double[- ]?check|cannot be undone|can't be undone|watch out"
    r"|heads up|be aware)\b", re.IGNORECASE)
_MAKE_SURE_RE = re.compile(r"\b(?:make sure|ensure)\b", re.IGNORECASE)
_STATE_RE = re.compile(
    r"\b(?:is|are|'s|'re|stays?|stayed|remains?)\s+(?:\w+\s+)?(?:running|ready|healthy|up|green|"
    r"online|active|available|live|stable|serving|reachable|complete|completed|finished|done|"
    r"deployed|synced|passing|succeeded|successful|working)\b", re.IGNORECASE)
_VERIFY_RE = re.compile(
    r"\bverif(?:y|ies|ied|ying)\b|\bvalidat(?:e|es|ed|ing)\b"
    r"|\b(?:confirm|check|ensure)(?:s|ed|ing)?\s+(?:that|whether|if)\b"
    r"|\bto\s+(?:confirm|check|verify|ensure|see\s+(?:that|if|whether))\b", re.IGNORECASE)
_CHECK_OBJECT_RE = re.compile(r"^\S+(?:\s+\S+){0,3}?\s+(?:box|checkbox|option|toggle)\b", re.IGNORECASE)
_PURPOSE_CHECK_RE = re.compile(r"\bto\s+((?:confirm|check|verify|ensure|make sure|see)\b.+)$",
                               re.IGNORECASE)
# Words that may make up a caution that says nothing by itself ("Be careful here.").
_BARE_CAUTION_WORDS = frozenset(
    "be careful watch out heads up warning caution aware here now with this that one step part "
    "please just so okay ok a word of at point very really extra super bit little the next "
    "following".split())

# ----------------------------------------------------------------- inputs

_CLIS = frozenset(
    "kubectl helm terraform docker docker-compose podman git aws gcloud gsutil az ansible "
    "ansible-playbook psql mysql redis-cli mongosh systemctl journalctl curl wget npm npx yarn pnpm "
    "pip pip3 python python3 ssh scp rsync eksctl minikube oc kubectx kubens openssl jq sudo "
    "apt apt-get brew cargo mvn gradle dotnet pulumi packer vagrant nginx".split())
# CLIs whose names are also English words: only a command right after "run" etc.
_WORDY_CLIS = frozenset({"make", "go", "node", "vault", "kind", "cat", "ls", "cd"})
_CLI_ALIASES = (
    (re.compile(r"\b(?:cube|kube)\s*(?:control|ctl|c\s?t\s?l|cuddle)\b", re.IGNORECASE), "kubectl"),
)
_RUN_VERBS = frozenset({"run", "runs", "ran", "running", "type", "types", "typed", "typing",
                        "enter", "enters", "entered", "entering", "execute", "executes",
                        "executed", "executing", "paste", "pasted", "pasting", "invoke", "call"})
_DETERMINERS = frozenset({"the", "a", "an", "my", "our", "your", "this", "that", "its", "their"})
_COMMAND_STOPS = frozenset({"and", "then", "to", "so", "which", "because", "until", "while", "since",
                            "but", "for", "again", "now", "please", "command",
                            "before", "after", "once", "when", "if", "where", "into", "onto",
                            "in", "on", "from", "with", "using", "by", "at", "of", "against"})
_ENGLISH_SLASHES = frozenset({"and/or", "on/off", "yes/no", "he/she", "his/her", "either/or",
                              "w/o", "true/false", "read/write", "input/output", "i/o"})
_WORD_PREFIXES = frozenset({"re", "pre", "co", "non", "self", "multi", "sub", "anti", "un", "de",
                            "semi", "post", "over", "under", "cross", "x"})
_VALUE_APPOSITION_RE = re.compile(
    r"\b(?:typ|enter|input|past|fill|put|us|set|choos|select|pick)\w*\b[^,]*?\b"
    r"(?:" + "|".join(sorted(_SETTING_NOUNS)) + r")\s*,\s*([^,.;!?]+?)\s*[.!?]*$",
    re.IGNORECASE)


# ============================================================ public API

def warm_up() -> None:
    """Load lemminflect's tables now (0.3-0.8 s, once a process), so that a build does it
    while transcription runs rather than after it."""
    describe_step(["We run the checks."], True)


def describe_step(sentences: Sequence[str], has_visual_change: bool) -> StepText:
    """Rewrite one step's narration into an instruction, kind, callouts and inputs.

    `sentences` are the transcribed narration of the step in order (objects with
    a `.text`, such as `model.Sentence`, are accepted too, so callers need not
    unpack them); `has_visual_change` says whether the screen changed in the step.
    """
    texts = [_normalise(getattr(s, "text", s) or "") for s in sentences]
    parsed = _parse_all(_split_sentences(texts), has_visual_change)
    if not parsed:
        if has_visual_change:
            return StepText(instruction=EMPTY_VISUAL_INSTRUCTION, kind="action")
        return StepText(instruction="", kind="note")
    parsed = _resolve_bare_cautions(parsed)
    chosen = _choose(parsed)
    main = parsed[chosen]
    instruction = _finish(main.rewrite)
    kind = _kind(main, parsed, has_visual_change)
    return StepText(
        instruction=instruction,
        kind=kind,
        callouts=_callouts(parsed, chosen, instruction),
        inputs=_extract_inputs(texts),
    )


# ============================================================ sentence model

@dataclass(frozen=True)
class _Parsed:
    """One narration sentence with its shape, role and imperative rewrite."""

    core: str  # the sentence without leading discourse markers
    shape: str  # first_person | imperative | setting | statement
    role: str  # "" | warning | verify | tip | bare_caution
    rewrite: str  # the best instruction this sentence can give, without final stop
    lemma: str = ""  # base form of the main verb, when known


def _parse_all(sentences: Sequence[str], has_visual_change: bool) -> list[_Parsed]:
    """Parse every sentence that still says something once fillers are gone."""
    out = []
    for sentence in sentences:
        core = _strip_fillers(sentence)
        if re.search(r"[A-Za-z0-9]", core):
            out.append(_parse(core, has_visual_change))
    return out


def _parse(core: str, has_visual_change: bool) -> _Parsed:
    """Classify one sentence: its shape decides how it rewrites, its role where it goes."""
    role = _role(core)
    action = _first_person(core)
    if action is not None:
        text, lemma = action
        if role == "" and _is_check_verb(lemma, text):
            role = "verify"
        return _Parsed(core, "first_person", role, text, lemma)
    if _is_imperative(core):
        return _Parsed(core, "imperative", role, _statement(core), _verb_lemma(_words(core)[0]) or "")
    setting = _setting(core) if has_visual_change and role == "" else None
    if setting is not None:
        return _Parsed(core, "setting", role, setting, "set")
    return _Parsed(core, "statement", role, _statement(core))


def _role(core: str) -> str:
    """Name the callout a sentence would make, from cue phrases in it."""
    if _TIP_RE.search(core):
        return "tip"
    if _CAUTION_RE.search(core):
        if _MAKE_SURE_RE.search(core) and _STATE_RE.search(core) and not re.search(
                r"\b(?:do not|don't|never|careful)\b", core, re.IGNORECASE):
            return "verify"  # "make sure they are running" checks a result
        words = re.findall(r"[a-z']+", core.lower())
        if words and all(w in _BARE_CAUTION_WORDS for w in words):
            return "bare_caution"
        return "warning"
    if _VERIFY_RE.search(core):
        return "verify"
    return ""


def _is_check_verb(lemma: str, text: str) -> bool:
    """A step whose own verb is "check"/"verify" is a check, unless it ticks a checkbox."""
    if lemma in ("verify", "validate"):
        return True
    return lemma == "check" and not _CHECK_OBJECT_RE.match(text)


def _resolve_bare_cautions(parsed: list[_Parsed]) -> list[_Parsed]:
    """Let "Be careful here." lend its warning to the statement that explains it.

    The bare caution is dropped when a neighbouring statement (the next one,
    else the previous) can carry the warning; otherwise it stays as a warning.
    """
    out = list(parsed)
    for i, p in enumerate(parsed):
        if p.role != "bare_caution":
            continue
        order = list(range(i + 1, len(parsed))) + list(range(i - 1, -1, -1))
        target = next((j for j in order if parsed[j].shape in ("statement", "setting")
                       and parsed[j].role in ("", "warning")), None)
        if target is None:
            out[i] = _Parsed(p.core, p.shape, "warning", p.rewrite, p.lemma)
        else:
            t = out[target]
            out[target] = _Parsed(t.core, "statement", "warning", _statement(t.core), t.lemma)
            out[i] = _Parsed(p.core, p.shape, "dropped", p.rewrite, p.lemma)
    return out


_SHAPE_RANK = MappingProxyType({
    ("first_person", ""): 0, ("first_person", "verify"): 1,
    ("imperative", ""): 2, ("imperative", "verify"): 3,
    ("setting", ""): 4,
    ("first_person", "warning"): 5, ("imperative", "warning"): 5,
    ("statement", ""): 6, ("statement", "verify"): 7, ("statement", "warning"): 7,
})


def _choose(parsed: Sequence[_Parsed]) -> int:
    """Pick the sentence that says what to do: actions first, then the last of equals."""
    def rank(i: int) -> tuple[int, int]:
        p = parsed[i]
        r = _SHAPE_RANK.get((p.shape, p.role), 8 if p.role == "tip" else 9)
        return (r, -i)
    return min(range(len(parsed)), key=rank)


def _kind(main: _Parsed, parsed: Sequence[_Parsed], has_visual_change: bool) -> str:
    """The instruction's own role wins; a separate warning beats the plain action/note."""
    if main.role == "warning":
        return "warning"
    if main.role == "verify":
        return "verification"
    if any(p.role == "warning" for p in parsed):
        return "warning"
    return "action" if has_visual_change else "note"


def _callouts(parsed: Sequence[_Parsed], chosen: int, instruction: str) -> tuple[Callout, ...]:
    """Turn the role-bearing sentences into callouts, in narration order, without repeats."""
    out: list[Callout] = []
    for i, p in enumerate(parsed):
        kind = p.role
        if kind not in ("warning", "verify", "tip"):
            continue
        if kind == "tip":  # a tip keeps its "you can also" wording even as the instruction
            text = _finish(_statement(re.sub(r"^(?:pro\s+)?tip\s*[:,-]?\s*", "", p.core, flags=re.I)))
        elif i == chosen:
            text = _verify_clause(instruction) if kind == "verify" else instruction
        else:
            text = _finish(p.rewrite)
        callout = Callout(kind, text)
        if text and callout not in out:
            out.append(callout)
    return tuple(out)


def _verify_clause(instruction: str) -> str:
    """From "Run X to confirm Y." keep "Confirm Y." so the callout adds, not repeats."""
    m = _PURPOSE_CHECK_RE.search(instruction.rstrip("."))
    return _finish(m.group(1)) if m else instruction


# ============================================================ normalising

def _normalise(text: str) -> str:
    """Straighten quotes and drop "um"/"uh", so rules see one spelling of each word."""
    text = str(text).replace("\u2019", "'").replace("\u2018", "'")
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    text = _DISFLUENCY_RE.sub("", text)
    text = re.sub(r"\b(the|a|an|i|to|we|and)\s+\1\b", r"\1", text, flags=re.IGNORECASE)  # ASR stutter
    return re.sub(r"\s+", " ", text).strip()


def _split_sentences(texts: Sequence[str]) -> list[str]:
    """Split at sentence-final punctuation; a segment may hold several sentences."""
    out = []
    for text in texts:
        for part in re.split(r"(?<=[.!?])\s+(?=\S)", text):
            out.extend(s.strip() for s in _UNPUNCTUATED_BREAK_RE.split(part) if s.strip())
    return out


def _strip_fillers(text: str) -> str:
    """Drop leading discourse markers and trailing politeness that a document does not need."""
    prev = None
    text = text.strip()
    while prev != text:
        prev = text
        text = _FILLER_RE.sub("", text, count=1).strip()
    return _TRAILING_FILLER_RE.sub("", text).strip()


def _words(text: str) -> list[str]:
    """Lowercase words without edge punctuation, for matching (not for output)."""
    return [_key(t) for t in text.split()]


def _key(token: str) -> str:
    """A token as a lowercase word, so "Save," and "save" compare equal."""
    return token.lower().strip(".,;:!?\"()[]{}")


# ============================================================ first person

def _first_person(core: str) -> Optional[tuple[str, str]]:
    """Rewrite "(prefix) I'm going to restart X" as ("Restart X (prefix)", "restart").

    The subject may follow a reason ("X, so I ..."), a time clause ("Once X,
    I ...") or a place ("In the console I ..."); anything else before it means
    the pronoun is not the subject of the sentence.
    """
    tokens = list(re.finditer(r"\S+", core))
    keys = [_key(t.group()) for t in tokens]
    for k, key in enumerate(keys):
        if not _is_subject(keys, k):
            continue
        prefix = core[:tokens[k].start()].strip()
        joined = _prefix_join(prefix)
        if joined is None:
            continue
        clause = _clause_from_subject(core, tokens, keys, k)
        if clause is None:
            continue
        text, lemma = clause
        if lemma in _MENTAL_VERBS:
            return None
        return joined(_strip_fillers(text).rstrip(" .,;:!?")), lemma
    return None


def _is_subject(keys: Sequence[str], k: int) -> bool:
    key = keys[k]
    if key in _SUBJECTS or key in _SUBJECT_CONTRACTIONS:
        return True
    return key == "let" and k + 1 < len(keys) and keys[k + 1] in _LET_SUBJECT_OBJECTS


def _prefix_join(prefix: str):
    """How the words before the subject attach to the rewritten action, or None if they can't."""
    if not prefix:
        return lambda action: action
    reason = re.match(r"^(.*?)(?:,\s*|\s+)(?:and\s+)?so$", prefix, re.IGNORECASE)
    if reason and reason.group(1).strip():
        cause = _lower_first(reason.group(1).strip().rstrip(","))
        return lambda action: f"{action}, since {cause}"
    if _PREFIX_RE.match(prefix):
        moved = _lower_first(prefix.rstrip(", "))
        return lambda action: f"{action} {moved}"
    if re.search(r"(?:,|\band|\bthen)(?:\s+(?:first|next|now|then|finally))?$", prefix, re.IGNORECASE):
        return lambda action: action  # a separate clause before: the action stands alone
    return None


def _clause_from_subject(core: str, tokens, keys: Sequence[str], k: int) -> Optional[tuple[str, str]]:
    """Skip subject and auxiliaries, put the verb in base form and keep the rest verbatim."""
    if keys[k] == "let":
        j, pending = k + 2, ""
    else:
        j, pending = k + 1, _SUBJECT_CONTRACTIONS.get(keys[k], "")
    j, pending, negate, backtrack = _skip_auxiliaries(keys, j, pending)
    if j >= len(keys):
        return None
    verb_i = j
    lemma = _verb_lemma(keys[j])
    if pending == "be" and lemma is not None and not keys[j].endswith("ing"):
        lemma = None  # "I'm done": a state, not an action
    if lemma is None and pending == "be" and keys[j] in _LOCATION_PREPS | {"back"}:
        return _location(core, tokens, keys, j)
    if lemma is None and backtrack is not None:
        verb_i, lemma = backtrack, _verb_lemma(keys[backtrack])
    if lemma is None:
        return None
    form = _form(keys[verb_i], lemma)
    head = ("Do not " + lemma) if negate else _capitalise(lemma)
    trail = _trail(tokens[verb_i].group())
    rest = _base_follow_ups(core[tokens[verb_i].end():], form)
    shown = re.match(r"^\s+(?:you\s+|everyone\s+)?how\s+to\s+(\S+)(.*)$", rest, re.IGNORECASE)
    if lemma == "show" and shown and _verb_lemma(shown.group(1)):
        lemma = _verb_lemma(shown.group(1)) or lemma  # "I'll show you how to deploy X": "Deploy X"
        head, trail, rest = _capitalise(lemma), _trail(shown.group(1)), shown.group(2)
    return head + trail + rest, lemma


def _skip_auxiliaries(keys: Sequence[str], j: int, pending: str):
    """Walk past "am going to", "will", "need to", "'ve", "just"...; report the verb slot.

    Returns (index, pending auxiliary, negated, index of a "going"/"got" that may be
    the main verb after all, as in "I'm going to the dashboard").
    """
    negate, backtrack = False, None
    while j < len(keys):
        w = keys[j]
        nxt = keys[j + 1] if j + 1 < len(keys) else ""
        if w in ("am", "are", "'m", "'re"):
            pending = "be"
            j += 1
        elif w in _MODALS:
            pending = ""
            j += 1
        elif w in ("don't", "dont") or (w == "do" and nxt == "not") or w == "never":
            negate = True
            j += 2 if w == "do" else 1
        elif w in _TO_AUXILIARIES and nxt == "to":
            backtrack = j if w in ("going", "got") else None
            pending = ""
            j += 2
        elif w == "go" and nxt == "ahead":
            j += 3 if j + 2 < len(keys) and keys[j + 2] == "and" else 2
        elif w in ("have", "has", "'ve") and _is_participle(nxt):
            pending = ""
            j += 1
        elif w == "be" and nxt.endswith("ing"):
            pending = "be"
            j += 1
        elif w in _ADVERBS or (w.endswith("ly") and len(w) > 4 and _verb_lemma(w) is None):
            j += 1
        else:
            break
    return j, pending, negate, backtrack


def _location(core: str, tokens, keys: Sequence[str], j: int) -> Optional[tuple[str, str]]:
    """"I'm on the login page" tells the reader where to go: "Go to the login page"."""
    back = keys[j] == "back"
    prep_i = j + 1 if back else j
    if prep_i >= len(keys) or keys[prep_i] not in _LOCATION_PREPS:
        return None
    rest = core[tokens[prep_i].end():]
    return ("Go back to" if back else "Go to") + rest, "go"


def _base_follow_ups(rest: str, form: str) -> str:
    """Turn later clauses into the same mood: "and I'm checking X" -> "and check X"."""
    tokens = list(re.finditer(r"\S+", rest))
    keys = [_key(t.group()) for t in tokens]
    edits: list[tuple[int, int, str]] = []
    i = 0
    while i < len(tokens):
        if keys[i] in ("and", "then", "or") or tokens[i].group().endswith(","):
            s = i + 1
            if s < len(keys) and keys[s] == "then":
                s += 1
            if s < len(keys) and _is_subject(keys, s):
                clause = _follow_up_clause(keys, s)
                if clause is not None:
                    end_i, lemma = clause
                    edits.append((tokens[s].start(), tokens[end_i].end(), lemma + _trail(tokens[end_i].group())))
                    i = end_i + 1
                    continue
            elif s < len(keys) and form in ("ing", "past") and keys[i] in ("and", "then", "or"):
                # only after a conjunction: "name, billing" is a value, not a second verb
                lemma = _verb_lemma(keys[s])
                if lemma is not None and lemma != keys[s] and _form(keys[s], lemma) == form:
                    edits.append((tokens[s].start(), tokens[s].end(), lemma + _trail(tokens[s].group())))
        i += 1
    for start, end, text in reversed(edits):
        rest = rest[:start] + text + rest[end:]
    return rest


def _follow_up_clause(keys: Sequence[str], s: int) -> Optional[tuple[int, str]]:
    """Find the verb of "I'll X" inside a later clause; None if it is not an action."""
    j = s + 2 if keys[s] == "let" else s + 1
    pending = _SUBJECT_CONTRACTIONS.get(keys[s], "")
    j, pending, _, _ = _skip_auxiliaries(keys, j, pending)
    if j >= len(keys):
        return None
    lemma = _verb_lemma(keys[j])
    if lemma is None or lemma in _MENTAL_VERBS or (pending == "be" and not keys[j].endswith("ing")):
        return None
    return j, lemma


def _trail(token: str) -> str:
    """The punctuation a token ends with, kept when its word is replaced."""
    return token[len(token.rstrip(".,;:!?")):]


def _verb_lemma(word: str) -> Optional[str]:
    """Base form of `word` read as a verb, via lemminflect; None if it cannot be one.

    Words lemminflect does not know at all (ssh, grep) count as verbs, since tools
    are often used as verbs in narration.
    """
    word = word.strip(".,;:!?\"'")
    head, _, last = word.rpartition("-")
    if not last.isalpha() or last in _FUNCTION_WORDS:
        return None
    verbs = getAllLemmas(last, upos="VERB")
    if verbs:
        lemma = verbs["VERB"][0]
    elif not getAllLemmas(last) and len(last) > 1:
        lemma = getLemma(last, upos="VERB")[0] if last.endswith(("ing", "ed")) else last
    else:
        return None
    return f"{head}-{lemma}" if head else lemma


def _is_participle(word: str) -> bool:
    """True for "clicked", "run" after "I've": the perfect tense, not "have" as a verb."""
    lemma = _verb_lemma(word)
    if lemma is None:
        return False
    forms = getAllInflections(lemma.rpartition("-")[2], upos="VERB")
    return word.rpartition("-")[2] in forms.get("VBN", ()) + forms.get("VBD", ())


def _form(word: str, lemma: str) -> str:
    """Which inflection the narrator used, so parallel verbs get the same treatment."""
    if word == lemma:
        return "base"
    if word.endswith("ing"):
        return "ing"
    if word in getInflection(lemma.rpartition("-")[2], "VBZ"):
        return "vbz"
    return "past"


# ============================================================ other shapes

def _is_imperative(core: str) -> bool:
    """Already an instruction: opens with a known verb in its base form ("Click Save")."""
    words = _words(core)
    if not words or not words[0].isalpha() or words[0] in _FUNCTION_WORDS:
        return False
    verbs = getAllLemmas(words[0], upos="VERB")
    return bool(verbs) and words[0] in verbs["VERB"]


def _setting(core: str) -> Optional[str]:
    """"The hotfix version is 5.2.1" with a screen change means "Set the hotfix version to 5.2.1"."""
    m = re.match(r"^((?:the|a|an|my|our|your)\s+[\w\s-]{1,40}?)\s+(?:is|are|should be|will be|"
                 r"needs to be|must be|'s)\s+(.+?)[.!?]*$", core, re.IGNORECASE)
    if not m:
        return None
    subject, value = m.group(1), m.group(2).strip()
    head = subject.split()[-1].lower()
    if head not in _SETTING_NOUNS and not _looks_like_value(value):
        return None
    if _SUBORDINATE_RE.match(value) or re.match(r"^(?:in|on|at|not|now|being|\w+ing)\b", value, re.I):
        return None
    return f"Set {_lower_first(subject)} to {value}"


def _looks_like_value(value: str) -> bool:
    """Digits, spoken numbers, quotes or identifiers: what one types into a field."""
    if re.search(r"\d|\"", value) or _identifier_ok(value):
        return True
    words = value.lower().split()
    return bool(words) and all(w in _NUMBER_WORDS or w == "point" for w in words)


def _statement(core: str) -> str:
    """Keep a statement as written, moving a leading time clause after the main clause."""
    m = re.match(r"^(" + _SUBORDINATE_RE.pattern[1:] + r"[^,]{1,120}),\s*(.+)$", core, re.IGNORECASE)
    text = core
    if m and re.search(r"[A-Za-z]", m.group(2)):
        main = m.group(2).rstrip(" .!?")
        text = f"{_capitalise(main)} {_lower_first(m.group(1))}"
    return _you_not_me(_drop_opinion(text.rstrip(" .,;:!?")))


def _drop_opinion(text: str) -> str:
    """"I think the canary is fine" -> "The canary is fine": the claim, not the speaker."""
    m = re.match(r"^(?:i|we|you)\s+(?:can\s+|could\s+)?(?:think|believe|guess|see|notice|know|expect|"
                 r"hope|assume|suppose|feel)\s+(?:that\s+)?(.+)$", text, re.IGNORECASE)
    if not m:
        return text
    claim = m.group(1)
    finite = re.search(r"\b(?:is|are|was|were|has|have|had|will|can|should|looks?|seems?|stays?|stayed|"
                       r"shows?|works?|runs?|ran|started|failed|passed)\b", claim, re.IGNORECASE)
    return _capitalise(claim) if finite and finite.start() > 0 else text


def _you_not_me(text: str) -> str:
    """A statement must not open like speech ("I'm", "We"); address the reader instead."""
    first, _, rest = text.partition(" ")
    swap = _READER_PRONOUNS.get("i'm" if first.lower() == "im" else first.lower())
    return f"{swap} {rest}".strip() if swap else text


# ============================================================ finishing

def _finish(text: str) -> str:
    """One clean sentence: first letter capital, addressed to the reader, capped, with a period."""
    text = _address_reader(_strip_fillers(text.lstrip(" ,;:-")))
    text = re.sub(r"^now\s+that\b", "Once", text, flags=re.IGNORECASE)  # must not open like speech
    text = _cap(text.rstrip(" .,;:!?"), MAX_INSTRUCTION_CHARS - 1)
    if not text:
        return ""
    first = text.split(" ", 1)[0]
    if first.lower() not in _CLIS and not re.search(r"[\d./_]", first):
        text = _capitalise(text)
    return text + "."


def _address_reader(text: str) -> str:
    """"... so I can restart it" -> "... so you can restart it"; quoted text is left alone."""
    parts = re.split(r"(\"[^\"]*\")", text)
    def swap(m: re.Match) -> str:
        return _READER_PRONOUNS[m.group(1).lower()]  # _finish capitalises a sentence start
    return "".join(p if p.startswith('"') else _READER_RE.sub(swap, p) for p in parts)


def _cap(text: str, limit: int) -> str:
    """Cut a run-on narration at the last word boundary within `limit` characters."""
    if len(text) <= limit:
        return text
    cut = text[:limit + 1].rsplit(" ", 1)[0] if " " in text[:limit + 1] else text[:limit]
    return cut.rstrip(" .,;:!?")


def _capitalise(text: str) -> str:
    """Upper-case only the first character; str.capitalize would lower "EC2" to "Ec2"."""
    return text[:1].upper() + text[1:] if text else text


def _lower_first(text: str) -> str:
    """Lowercase a clause's first word when it is an ordinary word ("The" but not "EC2")."""
    first, sep, rest = text.partition(" ")
    plain = first[:1].isupper() and first[1:].islower() and first != "I"
    if plain and (first.lower() in _FUNCTION_WORDS or getAllLemmas(first.lower().strip(",."))):
        first = first.lower()
    return first + sep + rest


# ============================================================ inputs

def _extract_inputs(texts: Sequence[str]) -> tuple[str, ...]:
    """Commands, versions, quoted strings and identifiers, in narration order, deduplicated."""
    out: list[str] = []
    for text in texts:
        for alias, name in _CLI_ALIASES:
            text = alias.sub(name, text)
        for value in _inputs_in(text):
            if value not in out:
                out.append(value)
    return tuple(out)


def _inputs_in(text: str) -> list[str]:
    """Find candidates by priority (commands first) and keep those not inside an earlier span."""
    spans: list[tuple[int, int, str]] = []
    for finder in (_commands, _quoted, _spoken_versions, _versions, _identifiers, _typed_values):
        for start, end, value in finder(text):
            if value and all(end <= s or start >= e for s, e, _ in spans):
                spans.append((start, end, value))
    return [value for _, _, value in sorted(spans)]


def _commands(text: str):
    """A known CLI name and its arguments up to the end of the clause."""
    tokens = list(re.finditer(r"\S+", text))
    keys = [_key(t.group()) for t in tokens]
    i = 0
    while i < len(tokens):
        raw = tokens[i].group().strip("\"'`")
        before = keys[i - 1] if i else ""
        starts = raw in _CLIS or (raw in _WORDY_CLIS and before in _RUN_VERBS)
        if not starts or before in _DETERMINERS:
            i += 1
            continue
        parts, j = [], i
        while j < len(tokens):
            tok = tokens[j].group().strip("\"'`")
            bare = tok.rstrip(".,;:!?")
            if j > i and (keys[j] in _COMMAND_STOPS or not bare):
                break
            parts.append(bare)
            j += 1
            if bare != tok:
                break
        if len(parts) > 1 or before in _RUN_VERBS:
            yield tokens[i].start(), tokens[j - 1].end(), " ".join(parts)
        i = max(j, i + 1)


def _quoted(text: str):
    """Text in quotes is what the narrator means to be typed exactly."""
    for m in re.finditer(r"\"([^\"]+)\"|(?<![\w'])'([^']+)'(?!\w)", text):
        value = (m.group(1) or m.group(2)).strip()
        yield m.start(), m.end(), value


def _spoken_versions(text: str):
    """ "five point two point one" -> "5.2.1"; one "point" only after the word "version"."""
    pattern = rf"\b{_NUM}(?:\s+point\s+{_NUM})+\b"
    for m in re.finditer(pattern, text, re.IGNORECASE):
        parts = re.split(r"\s+point\s+", m.group().lower())
        if len(parts) < 3 and not _version_context(text[:m.start()]):
            continue
        yield m.start(), m.end(), ".".join(str(_number(p)) for p in parts)


def _number(words: str) -> int:
    """ "twenty one" -> 21; digits pass through (recognisers mix both)."""
    if words.isdigit():
        return int(words)
    return sum(_NUMBER_WORDS[w] for w in re.split(r"[\s-]+", words))


def _version_context(before: str) -> bool:
    """Whether the words just before a number call it a version, so "5.2" is not a decimal."""
    return bool(re.search(r"\b(?:version|release|v|tag)\s*$", before, re.IGNORECASE))


def _versions(text: str):
    """Written versions: "v2.4.1", "5.2.1", or "version 5.2" (two parts need the cue)."""
    for m in re.finditer(r"(?<![\w.])(v?)(\d+(?:\.\d+){1,3}(?:-[0-9A-Za-z.]+)?)(?![\w-]|\.\d)", text):
        if m.group(1) or m.group(2).count(".") >= 2 or _version_context(text[:m.start()]):
            yield m.start(), m.end(), m.group(1) + m.group(2)


def _identifiers(text: str):
    """Tokens with dashes, slashes or dots that are not ordinary hyphenated English."""
    for m in re.finditer(r"\S+", text):
        raw = m.group()
        token = raw.strip("\"'()[]{}<>,;:!?").rstrip(".")
        if _identifier_ok(token):
            start = m.start() + raw.index(token)
            yield start, start + len(token), token


def _identifier_ok(token: str) -> bool:
    """deployment/payments, t3.large, us-east-1 yes; in-flight, re-run, and/or no."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.\-/:@=]*[A-Za-z0-9/]", token) or not re.search(r"[A-Za-z]", token):
        return False
    if not re.search(r"[./_:@=-]", token):
        return False
    low = token.lower()
    if "://" in low or re.search(r"[/_:@=]", low):
        return low not in _ENGLISH_SLASHES
    if "." in low:
        parts = low.split(".")
        return all(parts) and low not in ("e.g", "i.e", "a.m", "p.m", "etc") and len(max(parts, key=len)) > 1
    parts = low.split("-")
    if parts[0] in _WORD_PREFIXES:
        return False
    return any(re.search(r"\d", p) for p in parts) or any(
        len(p) > 1 and p not in _FUNCTION_WORDS and not getAllLemmas(p) for p in parts)


def _typed_values(text: str):
    """ "I'm typing the service name, orders." names the value "orders"."""
    m = _VALUE_APPOSITION_RE.search(text)
    if m and len(m.group(1).split()) <= 4:
        yield m.start(1), m.end(1), m.group(1)
