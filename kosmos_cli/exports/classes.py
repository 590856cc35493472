"""Which class a phrase's boxes get: by default one per distinct phrase, or one of the classes the user names.

Default: the phrase normalised (lowercase, single spaces, surrounding punctuation and a leading article a/an/the
dropped), numbered in the order first met. Named classes ("dog, cat, traffic light"), numbered in the order given:
a phrase is of a class when the class's words are the last words of the phrase's head, the last word singular or
plural ("a small brown dog" and "two dogs" are dog; "traffic lights" is traffic light). The head is the phrase
up to its first preposition or clause word ("a cup of coffee" -> cup, "a man wearing a hat" -> man). When several
classes fit, the one with the most words wins ("a traffic light" is traffic light, not light, if both are named).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import UsageError
from ..inputs.names import recorded

ARTICLES = frozenset({"a", "an", "the"})
_CUT = frozenset(
    {
        "of",
        "on",
        "in",
        "inside",
        "with",
        "without",
        "at",
        "near",
        "by",
        "under",
        "over",
        "above",
        "below",
        "behind",
        "beside",
        "besides",
        "between",
        "next",
        "from",
        "for",
        "to",
        "into",
        "onto",
        "against",
        "along",
        "across",
        "wearing",
        "holding",
        "carrying",
        "sitting",
        "standing",
        "that",
        "which",
        "who",
        "whose",
        "while",
        "and",
        "or",
    }
)
_PUNCTUATION = " \t\n.,;:!?\"'()[]{}"
_IRREGULAR = {
    "people": "person",
    "men": "man",
    "women": "woman",
    "children": "child",
    "mice": "mouse",
    "geese": "goose",
    "feet": "foot",
    "teeth": "tooth",
    "oxen": "ox",
    "dice": "die",
    "sheep": "sheep",
    "fish": "fish",
    "deer": "deer",
}


def normalise(phrase: str) -> str:
    """ "A Red Car." -> "red car": lowercase, single spaces, no surrounding punctuation, no leading article."""
    words = str(phrase).lower().strip(_PUNCTUATION).split()
    if len(words) > 1 and words[0] in ARTICLES:
        words = words[1:]
    elif words and words[0] in ARTICLES:  # the phrase is an article alone: nothing is named
        words = []
    return " ".join(words)


def singulars(word: str) -> set[str]:
    """The forms `word` may have in the singular (itself included): dogs -> dog, boxes -> box, puppies -> puppy."""
    forms = {word}
    if word in _IRREGULAR:
        forms.add(_IRREGULAR[word])
    if word.endswith("s") and len(word) > 2:
        forms.add(word[:-1])
        if word.endswith("es"):
            forms.add(word[:-2])
        if word.endswith("ies"):
            forms.add(word[:-3] + "y")
        if word.endswith("ves"):
            forms.update({word[:-3] + "f", word[:-3] + "fe"})
    return forms


def head(phrase: str) -> list[str]:
    """The words of a phrase up to its first preposition or clause word, article dropped."""
    words = normalise(phrase).split()
    for i, word in enumerate(words):
        if i and word in _CUT:
            return words[:i]
    return words


class Classes:
    """The classes of one export, numbered from 0. `named`: the user's classes, in order; None: one per phrase."""

    def __init__(self, named: Iterable[str] | None = None):
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self.fixed = named is not None
        if named is not None:
            for name in map(recorded, named):  # a name that is not valid Unicode, as fsnames records it
                key = " ".join(name.lower().split())
                if key in self._index:
                    raise UsageError(f"{{param}}: {name!r} is named twice: name each class once", param="classes")
                self._index[key] = len(self.names)
                self.names.append(" ".join(name.split()))  # one line in labels.txt, whatever it held
            if not self.names:
                raise UsageError('{param}: no class named: give some, e.g. --classes "dog,cat"', param="classes")
            self._words = [(k.split(), i) for k, i in self._index.items()]

    def of(self, phrase: str) -> int | None:
        """The class of a phrase's boxes (a new one is numbered now); None when it names none."""
        key = self.key(phrase)
        return None if key is None else self.index(key)

    def key(self, phrase: str) -> str | None:
        """Which class a phrase names, without numbering a new one: its normalised name by default, the matching
        named class otherwise; None for an empty phrase or one that names none of the named classes."""
        if not self.fixed:
            return normalise(phrase) or None
        words = head(phrase)
        best: tuple[int, str] | None = None  # (words in the class, its key)
        for class_words, _ in self._words:
            if _ends_with(words, class_words) and (best is None or len(class_words) > best[0]):
                best = (len(class_words), " ".join(class_words))
        return None if best is None else best[1]

    def index(self, key: str) -> int:
        """The number of the class `key` gives; by default a class met for the first time gets the next one."""
        if key not in self._index:
            self._index[key] = len(self.names)
            self.names.append(key)
        return self._index[key]


def _ends_with(words: list[str], class_words: list[str]) -> bool:
    n = len(class_words)
    if n == 0 or len(words) < n or words[len(words) - n : -1] != class_words[:-1]:
        return False
    return bool(singulars(words[-1]) & singulars(class_words[-1]))


def parse_classes(classes: str | Iterable[str] | None, classes_file: str | None) -> list[str] | None:
    """The user's classes: "dog,cat" or a list, or a file with one a line (blank lines and # comments skipped)."""
    if classes is not None and classes_file is not None:
        raise UsageError("--classes and --classes-file cannot both be given: use one", param="classes")
    if classes_file is not None:
        try:
            with open(classes_file, encoding="utf-8-sig") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise UsageError(
                f"{{param}} {classes_file}: cannot read it ({exc.strerror or exc})", param="classes_file"
            ) from None
        return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if classes is None:
        return None
    items = classes.split(",") if isinstance(classes, str) else list(classes)
    return [str(c).strip() for c in items if str(c).strip()]
