"""Generate the two small synthetic datasets kept in ``data/``.

Run ``python scripts/make_sample.py`` (options: ``--out DIR``, ``--seed N``). The script uses the
standard library only and draws every choice from ``random.Random`` objects seeded from the seed
and the split name, so the same seed always gives byte-identical files.

NER sample (``sample_ner/{train,dev,test}.txt``)
    CoNLL-style column files (``TOKEN TAG``, IOB2, a blank line between sentences, a
    ``-DOCSTART- O`` line before every document of 15-25 sentences). Sentences are built from
    short clause templates joined by connectors. Each template holds one entity slot (PER, LOC,
    ORG or MISC) next to a cue that decides its type. The slot is filled from a pool in which many
    names are deliberately ambiguous: "Jordan" is a person, a country or a racing team, "Dallas"
    a person, a city or a sports club, "Morgan Stanley" a person or a bank. For those names the
    word itself says nothing about the type; only the context does. Half the templates put the
    cue *before* the slot ("Mr. Jordan", "visited Jordan", "shares of Jordan") and half put it
    only *after* the slot, with neutral words before it ("Meanwhile , Jordan said he ...",
    "... , and Jordan shares fell ...", "Jordan 's capital ..."). A left-to-right tagger or a
    bag-of-words model therefore cannot get the post-cue half right; a bidirectional one can.
    Filler clauses add O words, numbers, punctuation, capitalised non-entities (sentence-initial
    words, weekdays, months). About 15% of the names are held out of the training split and
    used only in dev/test, so scores also measure tagging of unseen names from context.

Sentiment sample (``sample_sentiment/{train,dev,test}.tsv``)
    Tab-separated ``label<TAB>sentence`` with a header, lower-cased and space-tokenised like
    GLUE SST-2 (``is n't``, ``it 's``), label 1 positive and 0 negative, classes balanced.
    Sentences are film-review clauses ("the plot is dull") combined so that the label depends
    on structure, not on which words occur: negation flips a clause ("is not dull",
    "never feels boring"); in "A , but B", "while A , B", "although A , B" and
    "despite the dull plot , B" the second clause decides, in "B , although A" the first one
    does; "i expected a dull film , but it turned out to be wonderful" and "nobody could call
    the plot dull" also reverse the surface words. "the plot is dull but the acting is
    wonderful" and "the plot is wonderful but the acting is dull" contain the same words and
    carry opposite labels, so a bag-of-words classifier is capped well below a BiRNN.

Sentences already produced for an earlier split are redrawn, so no sentence occurs in two
splits (nor twice in one).
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SEED = 1234
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data"
SPLITS = ("train", "dev", "test")
NER_SIZES = {"train": 3000, "dev": 500, "test": 500}
SENTIMENT_SIZES = {"train": 2000, "dev": 300, "test": 300}

# ----------------------------------------------------------------------------- NER: names

# Names that take several types; the letters say which (P: PER, L: LOC, O: ORG).
AMBIGUOUS = """
Jordan:PLO Washington:PLO Dallas:PLO Houston:PLO Phoenix:PLO Denver:PLO Hamilton:PLO
Sterling:PLO Chelsea:PLO Preston:PLO Valencia:PLO Orlando:PLO Cleveland:PLO Lincoln:PLO
Florence:PL Victoria:PL Austin:PL Georgia:PL Charlotte:PL Sydney:PL Paris:PL Madison:PL
Kent:PL Warren:PL Clinton:PL Jackson:PL Adelaide:PL Savannah:PL Chester:PL Lancaster:PL
Israel:PL Chad:PL Douglas:PL Montgomery:PL Raleigh:PL Marion:PL Troy:PL Regina:PL
Jordan_Hill:PL Santa_Rosa:PL Grant_Park:PL Victoria_Falls:PL
Ford:PO Dell:PO Morgan_Stanley:PO Marshall:PO Johnson:PO Chase:PO Hilton:PO Marriott:PO
Disney:PO Ferrari:PO Porsche:PO Mercedes:PO Merrill_Lynch:PO Philips:PO Boeing:PO
Kellogg:PO Heinz:PO Benetton:PO Armani:PO Honda:PO Suzuki:PO Guinness:PO Cadbury:PO
Heineken:PO Walt_Disney:PO Dow_Jones:PO
Liverpool:LO Barcelona:LO Milan:LO Everton:LO Bolton:LO Leeds:LO Monaco:LO Porto:LO
Lazio:LO Marseille:LO Lyon:LO Dortmund:LO Hamburg:LO Bremen:LO Toyota:LO Nokia:LO
Amazon:LO Delta:LO Columbia:LO Olympia:LO Santa_Clara:LO Aston_Villa:LO Boston:LO
Chicago:LO Detroit:LO Toronto:LO
"""

# Names of one type only.
SPECIFIC = {
    "PER": """
        John_Smith Maria_Garcia Ahmed_Hassan Yuki_Tanaka Peter_Mueller Anna_Kowalski Boris_Petrov
        Li_Wei Carlos_Silva Fatima_Diallo Olga_Ivanova Hans_Becker Pierre_Dubois Sean_O'Brien
        Giovanni_Rossi Ravi_Sharma Emma_Johansson Lars_Nielsen Mehmet_Yilmaz Jan_de_Vries
        Juan_Carlos_Ferrero Mary_Ann_Evans Smith Mueller Petrov Garcia Tanaka Nakamura Okafor
        Kowalski Dubois Rossi Nielsen Yilmaz Abdullah Ivanova
    """,
    "LOC": """
        Germany France Kenya Brazil Tokyo Moscow Cairo Lagos Berlin Vienna Oslo Helsinki Nairobi
        Lima Quito Hanoi Bangkok Seoul Ankara Athens New_Delhi Buenos_Aires Rio_de_Janeiro
        South_Africa New_Zealand Sri_Lanka Bosnia Kabul Baghdad Tehran Ohio Texas Bavaria
        Scotland Wales Danube
    """,
    "ORG": """
        Microsoft Deutsche_Bank Reuters Nasdaq UEFA FIFA NATO United_Nations European_Union
        Bundesbank General_Motors IBM Intel Daimler-Benz Bank_of_Japan Royal_Dutch_Shell Exxon
        Nestle Unilever Fiat Renault Volkswagen Red_Cross Greenpeace Interpol World_Bank
        Manchester_United Real_Madrid Bayern_Munich Inter_Milan Air_France British_Airways
        Lufthansa Goldman_Sachs_Group Bank_of_Tokyo Siemens
    """,
    "MISC": """
        German French British Japanese Russian Brazilian Kenyan Dutch Chinese Italian Spanish
        Swiss Olympic Australian_Open World_Cup Tour_de_France Champions_League Nobel_Prize
    """,
}

TYPE_LETTERS = {"P": "PER", "L": "LOC", "O": "ORG"}
ENTITY_TYPES = ("PER", "LOC", "ORG", "MISC")
HOLDOUT_SHARE = 0.15  # share of each name list used only in dev/test
UNSEEN_RATE = 0.25  # in dev/test, chance that an entity is drawn from the held-out names
AMBIGUOUS_RATE = 0.55  # chance that a PER/LOC/ORG slot gets an ambiguous name

# ------------------------------------------------------------------------- NER: templates
# One token per space; "{PER}" etc. are entity slots, "{DAY}", "{MONTH}", "{YEAR}", "{NUM}"
# and "{SCORE}" are O fillers. "pre" templates carry the deciding cue before the slot, "post"
# templates only after it (the slot opens the clause, which follows a neutral connector).

PRE = {
    "PER": [
        "Mr. {PER} declined to comment",
        "Mrs. {PER} was not available",
        "Dr. {PER} led the study",
        "President {PER} arrived on {DAY}",
        "coach {PER} named the team",
        "the report was written by Professor {PER}",
        "a spokesman for Senator {PER} spoke to the press",
        "police arrested Mr. {PER} on {DAY}",
        "fans cheered for captain {PER}",
        "Judge {PER} ruled that the case could go ahead",
        "the award went to striker {PER}",
        "minister {PER} flew home",
    ],
    "LOC": [
        "heavy rain fell in {LOC} on {DAY}",
        "the delegation visited {LOC} last week",
        "troops were sent to {LOC}",
        "a bridge near {LOC} collapsed",
        "the road from {LOC} was closed",
        "prices rose in the city of {LOC}",
        "she moved to the town of {LOC} in {YEAR}",
        "he grew up north of {LOC}",
        "flights to {LOC} were cancelled",
        "in {LOC} , the streets were empty",
        "refugees crossed into {LOC}",
        "the talks were held in {LOC}",
    ],
    "ORG": [
        "shares of {ORG} fell {NUM} percent",
        "analysts at {ORG} expect growth",
        "the chief executive of {ORG} resigned",
        "he joined the bank {ORG} in {YEAR}",
        "a deal with the firm {ORG} was signed",
        "investors sold stock in {ORG}",
        "the board of {ORG} met on {DAY}",
        "a spokesman for the company {ORG} said nothing",
        "fans of the club {ORG} celebrated",
        "the carmaker {ORG} recalled {NUM} vehicles",
        "workers at {ORG} went on strike",
        "the group {ORG} bought a rival",
    ],
}

POST = {
    "PER": [
        "{PER} said on {DAY} that talks would continue",
        "{PER} told reporters he would stay",
        "{PER} , aged {NUM} , said she was happy",
        "{PER} scored in the {NUM}th minute",
        "{PER} said he was disappointed",
        "{PER} and his wife left early",
        "{PER} , who won the title in {YEAR} , retired",
        "{PER} said she would appeal",
        "{PER} , a former minister , denied the claims",
        "{PER} was born in {YEAR}",
        "{PER} won his second match",
        "{PER} thanked her coach",
    ],
    "LOC": [
        "{LOC} is a city of {NUM} people",
        "{LOC} is a small town on the coast",
        "{LOC} 's capital was quiet",
        "{LOC} border crossings were closed",
        "{LOC} , a port city , was flooded",
        "{LOC} lies on the river",
        "{LOC} has a population of {NUM}",
        "{LOC} 's mayor said the streets were safe",
        "{LOC} 's northern province was hit by floods",
        "{LOC} and its neighbours signed a treaty",
        "{LOC} is a province in the south",
        "{LOC} 's parliament voted on {DAY}",
    ],
    "ORG": [
        "{ORG} shares fell {NUM} percent",
        "{ORG} shares rose sharply on {DAY}",
        "{ORG} reported a net profit of {NUM} million",
        "{ORG} said its profit rose",
        "{ORG} said it would cut {NUM} jobs",
        "{ORG} 's board approved the merger",
        "{ORG} {SCORE} {ORG} {SCORE}",
        "{ORG} , the largest bank in the country , cut rates",
        "{ORG} stock closed higher",
        "{ORG} announced a takeover bid",
        "{ORG} , the club , sacked its manager",
        "{ORG} plans to list its shares",
    ],
}

MISC_CLAUSES = [
    "{MISC} officials said the talks failed",
    "the {MISC} government raised taxes",
    "the {MISC} team lost on {DAY}",
    "she won a medal at the {MISC} games",
    "tickets for the {MISC} sold out",
    "a {MISC} court fined the company",
]

FILLER_CLAUSES = [
    "the market was quiet",
    "prices rose {NUM} percent",
    "the meeting ended without agreement",
    "it was the {NUM}th time this year",
    "{DAY} 's match was postponed",
    "talks resume on {DAY}",
    "the index closed at {NUM}",
    "officials expect a decision in {MONTH}",
    "nobody was hurt",
    "the vote was delayed until {MONTH} {NUM}",
    "turnout was about {NUM} percent",
    "the dollar was steady",
]

PREFIXES = [
    "On {DAY} ,",
    "Meanwhile ,",
    "In {MONTH} ,",
    "However ,",
    "Earlier ,",
    "Last year ,",
    "In a statement ,",
    "According to the report ,",
    "Separately ,",
    "In {YEAR} ,",
]

CONNECTORS = [", and", ", but", ", while", "; meanwhile ,", "after", "because", ", although",
              "and"]

DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = "January February March April May June July August September October November".split()


def _names(text: str) -> list[str]:
    """Split a whitespace-separated name list; "_" joins the tokens of one name."""
    return [name.replace("_", " ") for name in text.split()]


@dataclass
class NamePools:
    """Names per entity type, split into those seen in training and those held out."""

    seen: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    unseen: dict[str, dict[str, list[str]]] = field(default_factory=dict)


def build_name_pools(seed: int) -> NamePools:
    """Hold out HOLDOUT_SHARE of each name list (same for every split) and index by type."""
    rng = random.Random(f"{seed}/ner/holdout")
    ambiguous = [entry.split(":") for entry in AMBIGUOUS.split()]
    pools = NamePools()
    for kind in ("ambiguous", "specific"):
        for pool in (pools.seen, pools.unseen):
            pool[kind] = {etype: [] for etype in ENTITY_TYPES}
    lists = [(name.replace("_", " "), [TYPE_LETTERS[c] for c in letters])
             for name, letters in ambiguous]
    heldout = _holdout(rng, [name for name, _ in lists])
    for name, types in lists:
        target = pools.unseen if name in heldout else pools.seen
        for etype in types:
            target["ambiguous"][etype].append(name)
    for etype in ENTITY_TYPES:
        names = _names(SPECIFIC[etype])
        heldout = _holdout(rng, names)
        for name in names:
            (pools.unseen if name in heldout else pools.seen)["specific"][etype].append(name)
    return pools


def _holdout(rng: random.Random, names: list[str]) -> set[str]:
    order = sorted(names)
    rng.shuffle(order)
    return set(order[: round(len(order) * HOLDOUT_SHARE)])


def pick_name(rng: random.Random, pools: NamePools, etype: str, split: str) -> list[str]:
    """Draw the tokens of one entity name of type `etype` for `split`."""
    source = pools.seen
    if split != "train" and rng.random() < UNSEEN_RATE:
        source = pools.unseen
    kind = "ambiguous" if rng.random() < AMBIGUOUS_RATE else "specific"
    if not source[kind][etype]:
        kind = "specific"
    return rng.choice(source[kind][etype]).split()


def fill(rng: random.Random, slot: str) -> str:
    """An O token for a non-entity slot."""
    if slot == "DAY":
        return rng.choice(DAYS)
    if slot == "MONTH":
        return rng.choice(MONTHS)
    if slot == "YEAR":
        return str(rng.randint(1960, 1999))
    if slot == "SCORE":
        return str(rng.randint(0, 5))
    if rng.random() < 0.2:
        return f"{rng.randint(1, 99)}.{rng.randint(0, 9)}"
    return str(rng.randint(2, 120))


def expand(rng: random.Random, template: str, pools: NamePools, split: str) -> list[tuple]:
    """Turn a template into (token, tag) pairs, filling its slots."""
    out = []
    for word in template.split():
        if not (word.startswith("{") and word.endswith("}")):
            out.append((word, "O"))
            continue
        slot = word[1:-1]
        if slot in ENTITY_TYPES:
            name = pick_name(rng, pools, slot, split)
            out += [(tok, ("B-" if i == 0 else "I-") + slot) for i, tok in enumerate(name)]
        else:
            out.append((fill(rng, slot), "O"))
    return out


def pick_clause(rng: random.Random) -> str:
    """A clause template: entity with a cue before it or after it, MISC, or O filler."""
    kind = rng.choices(("pre", "post", "misc", "filler"), weights=(38, 38, 9, 15))[0]
    if kind == "misc":
        return rng.choice(MISC_CLAUSES)
    if kind == "filler":
        return rng.choice(FILLER_CLAUSES)
    etype = rng.choice(("PER", "LOC", "ORG"))
    return rng.choice((PRE if kind == "pre" else POST)[etype])


def ner_sentence(rng: random.Random, pools: NamePools, split: str) -> list[tuple]:
    """One sentence of 5-30 (token, tag) pairs: optional prefix, 1-3 clauses, a full stop."""
    while True:
        pairs = []
        if rng.random() < 0.3:
            pairs += expand(rng, rng.choice(PREFIXES), pools, split)
        for i in range(rng.choices((1, 2, 3), weights=(5, 4, 1))[0]):
            if i:
                pairs += expand(rng, rng.choice(CONNECTORS), pools, split)
            pairs += expand(rng, pick_clause(rng), pools, split)
        pairs.append((".", "O"))
        if 5 <= len(pairs) <= 30:
            break
    token, tag = pairs[0]
    if tag == "O":
        pairs[0] = (token[0].upper() + token[1:], tag)
    return pairs


def make_ner(seed: int) -> dict[str, list[list[list[tuple]]]]:
    """All NER splits as documents of sentences; no sentence repeats across splits."""
    pools = build_name_pools(seed)
    seen: set[tuple] = set()
    splits = {}
    for split in SPLITS:
        rng = random.Random(f"{seed}/ner/{split}")
        sentences = []
        while len(sentences) < NER_SIZES[split]:
            sentence = ner_sentence(rng, pools, split)
            key = tuple(sentence)
            if key not in seen:
                seen.add(key)
                sentences.append(sentence)
        docs = []
        while sentences:
            size = rng.randint(15, 25)
            docs.append(sentences[:size])
            sentences = sentences[size:]
        splits[split] = docs
    return splits


def write_ner(path: Path, docs: list[list[list[tuple]]]) -> None:
    lines = []
    for doc in docs:
        lines += ["-DOCSTART- O", ""]
        for sentence in doc:
            lines += [f"{token} {tag}" for token, tag in sentence]
            lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


def entity_spans(sentence: list[tuple]) -> list[tuple[str, str]]:
    """(type, surface string) of each entity of an IOB2 sentence."""
    spans = []
    for token, tag in sentence:
        if tag.startswith("B-"):
            spans.append([tag[2:], [token]])
        elif tag.startswith("I-"):
            spans[-1][1].append(token)
    return [(etype, " ".join(tokens)) for etype, tokens in spans]


def ner_stats(splits: dict) -> list[str]:
    """Table rows: sentences, tokens, documents, entities per type, ambiguity, unseen names."""
    train_strings = {
        s for doc in splits["train"] for sent in doc for _, s in entity_spans(sent)
    }
    rows = [f"{'split':6} {'docs':>5} {'sents':>6} {'tokens':>7} "
            + " ".join(f"{t:>5}" for t in ENTITY_TYPES)
            + f" {'ambig-strings':>14} {'unseen-ents':>12}"]
    for split, docs in splits.items():
        sentences = [sent for doc in docs for sent in doc]
        spans = [span for sent in sentences for span in entity_spans(sent)]
        types = Counter(etype for etype, _ in spans)
        by_string: dict[str, set[str]] = {}
        for etype, string in spans:
            by_string.setdefault(string, set()).add(etype)
        ambiguous = sum(len(t) > 1 for t in by_string.values())
        unseen = sum(string not in train_strings for _, string in spans)
        rows.append(
            f"{split:6} {len(docs):>5} {len(sentences):>6} "
            f"{sum(len(s) for s in sentences):>7} "
            + " ".join(f"{types[t]:>5}" for t in ENTITY_TYPES)
            + f" {f'{ambiguous}/{len(by_string)}':>14} {f'{unseen / len(spans):.1%}':>12}"
        )
    return rows


# ------------------------------------------------------------------------------ sentiment

NOUNS = ("plot acting script dialogue soundtrack pacing ending cast direction cinematography "
         "story humor score editing screenplay").split()
ASPECTS = [f"the {noun}" for noun in NOUNS] + [
    "this film", "the movie", "the lead performance", "the final act", "the first half",
]
POSITIVE = ("good great wonderful charming moving funny clever engaging beautiful gripping "
            "delightful brilliant fresh touching smart compelling stunning entertaining "
            "heartfelt witty solid enjoyable memorable impressive").split()
NEGATIVE = ("bad dull boring awful tedious clumsy predictable weak silly flat lifeless messy "
            "shallow forgettable painful bland tiresome pretentious confusing stale sloppy lazy "
            "mediocre annoying").split()
INTENSIFIERS = ("very really truly remarkably incredibly thoroughly genuinely rather quite so "
                "utterly consistently").split()
VERBS = {  # plain form -> negated forms (each flips the adjective's polarity)
    "is": ["is not", "is n't", "is never", "is hardly", "is not at all", "is far from"],
    "was": ["was not", "was n't", "was never", "was hardly", "was not at all"],
    "feels": ["does n't feel", "does not feel", "never feels", "hardly feels"],
    "seems": ["does n't seem", "does not seem", "never seems", "hardly seems"],
}
NEGATION_RATE = 0.25
OPENERS = ["", "", "", "overall ,", "honestly ,", "i thought", "in the end ,", "frankly ,"]

# Sentence structures and their weights; each builder returns words for target polarity p.
STRUCTURE_WEIGHTS = {
    "simple": 40, "and": 16, "but": 12, "although_first": 5, "although_last": 5, "while": 4,
    "despite_first": 4, "despite_last": 4, "expected": 4, "call": 3, "not_only": 3,
}


def adjective(rng: random.Random, polarity: int) -> str:
    return rng.choice(POSITIVE if polarity > 0 else NEGATIVE)


def clause(rng: random.Random, polarity: int, negation: bool = True) -> str:
    """'<aspect> <verb> [intensifier] <adjective>' with the given overall polarity (+1/-1)."""
    verb = rng.choice(sorted(VERBS))
    if negation and rng.random() < NEGATION_RATE:
        return f"{rng.choice(ASPECTS)} {rng.choice(VERBS[verb])} {adjective(rng, -polarity)}"
    intens = f"{rng.choice(INTENSIFIERS)} " if rng.random() < 0.4 else ""
    return f"{rng.choice(ASPECTS)} {verb} {intens}{adjective(rng, polarity)}"


def sentiment_sentence(rng: random.Random, p: int) -> tuple[str, str]:
    """(structure name, sentence) whose sentiment is p (+1 positive, -1 negative)."""
    kind = rng.choices(list(STRUCTURE_WEIGHTS), weights=list(STRUCTURE_WEIGHTS.values()))[0]
    noun = rng.choice(NOUNS)
    text = {
        "simple": lambda: f"{rng.choice(OPENERS)} {clause(rng, p)}",
        "and": lambda: f"{clause(rng, p)} , and {clause(rng, p)}",
        "but": lambda: f"{clause(rng, -p)} {rng.choice([', but', 'but', ', yet'])} "
                       f"{clause(rng, p)}",
        "although_first": lambda: f"although {clause(rng, -p)} , {clause(rng, p)}",
        "although_last": lambda: f"{clause(rng, p)} , although {clause(rng, -p)}",
        "while": lambda: f"while {clause(rng, -p)} , {clause(rng, p)}",
        "despite_first": lambda: f"despite the {adjective(rng, -p)} {noun} , {clause(rng, p)}",
        "despite_last": lambda: f"{clause(rng, p)} despite the {adjective(rng, -p)} {noun}",
        "expected": lambda: f"i expected a {adjective(rng, -p)} film , but it turned out to be "
                            f"{adjective(rng, p)}",
        "call": lambda: f"{rng.choice(['nobody could call', 'i would not call', 'few would call'])}"
                        f" {rng.choice(ASPECTS)} {adjective(rng, -p)}",
        "not_only": lambda: f"not only is the {noun} {adjective(rng, p)} , but "
                            f"{rng.choice(ASPECTS)} is also {adjective(rng, p)}",
    }[kind]()
    if any(text.count(aspect + " ") > 1 for aspect in ASPECTS):
        return sentiment_sentence(rng, p)  # the same aspect twice reads oddly: draw again
    if rng.random() < 0.7:
        text += " ."
    return kind, " ".join(text.split())


def make_sentiment(seed: int) -> dict[str, list[tuple[int, str, str]]]:
    """All sentiment splits as (label, sentence, structure); balanced, no repeats."""
    seen: set[str] = set()
    splits = {}
    for split in SPLITS:
        rng = random.Random(f"{seed}/sentiment/{split}")
        labels = [0, 1] * (SENTIMENT_SIZES[split] // 2)
        rng.shuffle(labels)
        rows = []
        for label in labels:
            while True:
                kind, text = sentiment_sentence(rng, 1 if label else -1)
                if text not in seen:
                    break
            seen.add(text)
            rows.append((label, text, kind))
        splits[split] = rows
    return splits


def write_sentiment(path: Path, rows: list[tuple[int, str, str]]) -> None:
    lines = ["label\tsentence"] + [f"{label}\t{text}" for label, text, _ in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


def sentiment_stats(splits: dict) -> list[str]:
    rows = [f"{'split':6} {'sents':>6} {'tokens':>7} {'neg(0)':>7} {'pos(1)':>7} "
            f"{'negated':>8} {'contrast':>9}"]
    contrast = {"but", "although_first", "although_last", "while", "despite_first",
                "despite_last", "expected"}
    negators = {"not", "n't", "never", "hardly", "nobody", "far"}
    for split, data in splits.items():
        labels = Counter(label for label, _, _ in data)
        negated = sum(bool(negators & set(text.split())) for _, text, _ in data)
        contrasted = sum(kind in contrast for _, _, kind in data)
        tokens = sum(len(text.split()) for _, text, _ in data)
        rows.append(f"{split:6} {len(data):>6} {tokens:>7} {labels[0]:>7} {labels[1]:>7} "
                    f"{negated:>8} {contrasted:>9}")
    return rows


# ----------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: the repository's data/)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"random seed (default: {DEFAULT_SEED})")
    args = parser.parse_args(argv)

    ner_dir = args.out / "sample_ner"
    ner_dir.mkdir(parents=True, exist_ok=True)
    ner = make_ner(args.seed)
    for split, docs in ner.items():
        write_ner(ner_dir / f"{split}.txt", docs)
    print(f"NER sample -> {ner_dir} (seed {args.seed})")
    print("\n".join("  " + row for row in ner_stats(ner)))

    sentiment_dir = args.out / "sample_sentiment"
    sentiment_dir.mkdir(parents=True, exist_ok=True)
    sentiment = make_sentiment(args.seed)
    for split, rows in sentiment.items():
        write_sentiment(sentiment_dir / f"{split}.tsv", rows)
    print(f"Sentiment sample -> {sentiment_dir} (seed {args.seed})")
    print("\n".join("  " + row for row in sentiment_stats(sentiment)))


if __name__ == "__main__":
    main()
