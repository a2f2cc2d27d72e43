"""English→Spanish: a corpus the project authors itself, with gold word alignments, and a loader for the
real Tatoeba/Anki ``spa-eng`` file.

**The generated corpus** comes from a grammar over a hand-curated lexicon (``LEXICON``: nouns with
gender, plural and a semantic class; adjectives with their four forms and the classes of noun they suit, so
there is no "the green girl"; regular and irregular verbs in the present, preterite and future, and the
imperfect that the verbs of state, ser, estar, tener, querer and conocer, use for the English past). Its sentences show what makes Spanish differ from English word by
word: adjectives after the noun, agreeing in gender and number (*the red house* → *la casa roja*); dropped
subject pronouns (*I eat* → *como*); object clitics before the verb (*I love you* → *te quiero*, *I see him*
→ *lo veo*); the personal *a* (*I see the boy* → *veo al niño*); *gustar*, whose subject is the thing liked
(*I like the dogs* → *me gustan los perros*); ser and estar; negation with *no*; questions with ¿ ? and a
subject after the verb (*is the soup hot?* → *¿está caliente la sopa?*); possessives; numbers.
Everything is lower case, one token per word or punctuation mark.

Every sentence pair comes with its **gold alignment** in the convention of Och & Ney (2003): *sure* links
S (unambiguous) and *possible* links P ⊇ S (ambiguous). Links are pairs (i, j): Spanish token i, English
token j, the (row, column) of an attention matrix whose rows are the Spanish words. The conventions:

- a content word, article, number, possessive, preposition or clitic is sure-linked to the English word it
  translates; every Spanish token has **at most one** sure link, so one link per Spanish word (the argmax
  of a row of attention) can score a perfect AER;
- a verb form is sure-linked to the English verb, and possibly to what English spreads over other words:
  the dropped subject pronoun (*como* ↔ *I*), the auxiliaries *do/does/did/will*, the particle of *look
  for* or *wait for*, the *to* of *want to eat*;
- *no* is sure-linked to *not*, possibly to *do/does/did*;
- words Spanish adds have possible links only: the personal *a* to the object it marks, an article
  inserted before a bare English noun (*I like dogs* → *me gustan los perros*) to that noun, the *de* of
  *debajo de* to *under*, the opening ¿ to the closing ? and to the English word that opens the question;
- a contraction (*al* = a + el, *del* = de + el) is sure-linked to *the* and possibly to the preposition;
- with *gustar* the indirect-object clitic (*me*, *te*, *le*...) is sure-linked to the English subject;
- the closing ? is sure-linked to ?.

**Splits**: some noun–adjective combinations (attributive, *the red house*, or predicative, *the house is
red*) are held out of training; the test set holds only sentences with a held-out combination, so its
score measures compositional generalisation (every held-out noun and adjective is seen in training, in
other combinations). Generation is deterministic for a seed; the mapping English → Spanish is a function
(a sentence never gets two translations), which ``generate_corpus`` checks as it goes.

``example(pattern, subject=..., verb=..., object=...)`` builds one sentence pair with chosen words (the
chapter uses it to show each phenomenon); ``SHOWCASE`` lists the sentences always in the training set
(*I love you* among them).

**Tatoeba/Anki**: ``load_tatoeba`` reads ``spa.txt`` (tab-separated English, Spanish and, in the
manythings.org file, an attribution) from a text file or from either zip layout; ``download_tatoeba``
fetches and caches it, only when called (sentences from https://tatoeba.org, CC-BY 2.0 FR).
"""

from __future__ import annotations

import collections
import functools
import os
import pathlib
import random
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from .. import _checks
from . import download

__all__ = [
    "ADJECTIVES", "LEXICON", "NAMES", "NOUNS", "PATTERNS", "PERSONS", "SHOWCASE", "TATOEBA_URLS", "VERBS",
    "Adjective", "Corpus", "Noun", "Pair", "Verb", "compatible_combos", "conjugate", "download_tatoeba",
    "example", "generate_corpus", "load_tatoeba", "parse_tatoeba",
]

PERSONS = ("1s", "2s", "3s", "1p", "3p")
"""Grammatical persons used: I, you (singular, tú), he/she/it, we, they. No vosotros: "you" is tú."""

# --- the lexicon -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Noun:
    """A noun. ``en_pl``/``es_pl`` are None for a mass noun (no plural, no "a", no number: bread, water).
    gender: "m" or "f". tags: semantic classes (person, animal, food, drink, object, clothing, place) and
    finer ones (readable, openable, breakable, ...) that decide which verbs, adjectives and prepositions
    suit it. ``el`` marks a feminine noun that takes *el* in the singular (*el agua*). ``prep`` is the
    English locative preposition of a place (*at the beach*, *in the park*)."""

    en: str
    es: str
    gender: str
    tags: frozenset[str]
    en_pl: str | None = None
    es_pl: str | None = None
    el: bool = False
    prep: str = "in"

    @property
    def mass(self) -> bool:
        return self.en_pl is None


@dataclass(frozen=True)
class Adjective:
    """An adjective: English form and the Spanish masculine/feminine singular/plural forms; ``tags``:
    the noun classes it suits; ``copula``: "ser" or "estar", the verb it takes as a predicate."""

    en: str
    forms: dict  # {("m", False): "rojo", ("f", False): "roja", ("m", True): "rojos", ("f", True): "rojas"}
    tags: frozenset[str]
    copula: str

    def form(self, gender: str, plural: bool) -> str:
        return self.forms[(gender, plural)]

    def __hash__(self):
        return hash(self.en)


@dataclass(frozen=True)
class Verb:
    """A verb. English: base, third person singular, past, and an optional particle (*look for*).
    Spanish: the infinitive and a table ``es[tense][person]`` for tense in present, past (preterite),
    future (and imperfect where the grammar uses it). ``objects``/``subjects``: the noun classes allowed."""

    en: str
    en_3s: str
    en_past: str
    infinitive: str
    es: dict
    objects: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset({"person"})
    particle: str | None = None

    def __hash__(self):
        return hash((self.en, self.particle))


def _es_plural(word: str) -> str:
    """Spanish plural of a noun or adjective: -s after an unstressed vowel or a stressed é (café, bebé),
    -es after a consonant (with z -> c, and a final stressed syllable losing its accent: ratón -> ratones)."""
    unaccent = str.maketrans("áéíóú", "aeiou")
    if word[-1] in "aeiouéá":
        return word + "s"
    if word.endswith("z"):
        return word[:-1] + "ces"
    if any(c in word[-3:] for c in "áéíóú") and word[-1] in "ns":
        return word.translate(unaccent) + "es"
    return word + "es"


_NOUN_TABLE = """
# english       plural      spanish      gender  tags (first one is the class)
man             men         hombre       m  person nopossessive
woman           women       mujer        f  person nopossessive
boy             -           niño         m  person
girl            -           niña         f  person
brother         -           hermano      m  person family
sister          -           hermana      f  person family
father          -           padre        m  person family singular
mother          -           madre        f  person family singular
son             -           hijo         m  person family
daughter        -           hija         f  person family
grandfather     -           abuelo       m  person family
grandmother     -           abuela       f  person family
uncle           -           tío          m  person family
aunt            -           tía          f  person family
friend          -           amigo        m  person family
teacher         -           profesor     m  person
doctor          -           médico       m  person
neighbour       -           vecino       m  person
student         -           estudiante   m  person
baby            babies      bebé         m  person family
dog             -           perro        m  animal small
cat             -           gato         m  animal small
horse           -           caballo      m  animal
bird            -           pájaro       m  animal small
cow             -           vaca         f  animal
mouse           mice        ratón        m  animal small
rabbit          -           conejo       m  animal small
duck            -           pato         m  animal small
hen             -           gallina      f  animal small
frog            -           rana         f  animal small
monkey          -           mono         m  animal
bear            -           oso          m  animal
lion            -           león         m  animal
snake           -           serpiente    f  animal small
turtle          -           tortuga      f  animal small
elephant        -           elefante     m  animal
apple           -           manzana      f  food fruit cookable
bread           mass        pan          m  food
cheese          mass        queso        m  food
soup            -           sopa         f  food cookable
cake            -           pastel       m  food cookable
banana          -           plátano      m  food fruit
egg             -           huevo        m  food cookable
rice            mass        arroz        m  food cookable
meat            mass        carne        f  food cookable
salad           -           ensalada     f  food cookable
sandwich        sandwiches  bocadillo    m  food cookable
tomato          tomatoes    tomate       m  food fruit
potato          potatoes    patata       f  food cookable
cookie          -           galleta      f  food cookable
strawberry      strawberries  fresa      f  food fruit
lemon           -           limón        m  food fruit
carrot          -           zanahoria    f  food cookable
water           mass        agua         f  drink el
coffee          mass        café         m  drink
milk            mass        leche        f  drink
juice           mass        zumo         m  drink
tea             mass        té           m  drink
wine            mass        vino         m  drink
lemonade        mass        limonada     f  drink
book            -           libro        m  object readable openable portable
table           -           mesa         f  object surface washable paintable
car             -           coche        m  object washable paintable big
door            -           puerta       f  object openable paintable
window          -           ventana      f  object openable breakable washable
chair           -           silla        f  object surface breakable paintable
letter          -           carta        f  object readable writable openable portable
key             -           llave        f  object portable
phone           -           teléfono     m  object breakable portable
box             boxes       caja         f  object openable container portable
bag             -           bolsa        f  object openable container portable
pen             -           bolígrafo    m  object portable
ball            -           pelota       f  object portable
lamp            -           lámpara      f  object breakable
bed             -           cama         f  object surface
clock           -           reloj        m  object breakable portable
computer        -           ordenador    m  object breakable
picture         -           cuadro       m  object paintable
cup             -           taza         f  object breakable container washable portable
glass           glasses     vaso         m  object breakable container washable portable
plate           -           plato        m  object breakable washable portable
newspaper       -           periódico    m  object readable portable
flower          -           flor         f  object portable
bicycle         -           bicicleta    f  object washable paintable
shirt           -           camisa       f  clothing
dress           dresses     vestido      m  clothing
hat             -           sombrero     m  clothing
shoe            -           zapato       m  clothing
skirt           -           falda        f  clothing
coat            -           abrigo       m  clothing
sock            -           calcetín     m  clothing
jacket          -           chaqueta     f  clothing
house           -           casa         f  place building home paintable
city            cities      ciudad       f  place town
school          -           escuela      f  place building
park            -           parque       m  place
beach           beaches     playa        f  place at
market          -           mercado      m  place building at
library         libraries   biblioteca   f  place building
church          churches    iglesia      f  place building
garden          -           jardín       m  place
kitchen         -           cocina       f  place
restaurant      -           restaurante  m  place building
hospital        -           hospital     m  place building
museum          -           museo        m  place building
street          -           calle        f  place
river           -           río          m  place at
forest          -           bosque       m  place
shop            -           tienda       f  place building
office          -           oficina      f  place building
bank            -           banco        m  place building at
village         -           pueblo       m  place town
"""

_ADJECTIVE_TABLE = """
# english      masc. sg.     copula  tags (noun classes it suits)
red            rojo          ser     object clothing paintable fruit
green          verde         ser     object clothing paintable fruit
blue           azul          ser     object clothing paintable
yellow         amarillo      ser     object clothing paintable fruit
white          blanco        ser     object clothing animal paintable
black          negro         ser     object clothing animal paintable
grey           gris          ser     object clothing animal paintable
brown          marrón        ser     object clothing animal paintable
big            grande        ser     person animal object clothing place food
small          pequeño       ser     person animal object clothing place food
tall           alto          ser     person
short          bajo          ser     person
young          joven         ser     person animal
old            viejo         ser     person animal object clothing place
new            nuevo         ser     object clothing building town
beautiful      hermoso       ser     person animal object clothing place
ugly           feo           ser     person animal object clothing place
expensive      caro          ser     object clothing food drink
cheap          barato        ser     object clothing food drink
delicious      delicioso     estar   food drink
sweet          dulce         ser     food drink
hot            caliente      estar   food drink
cold           frío          estar   food drink place
fresh          fresco        estar   food drink
happy          contento      estar   person animal
sad            triste        estar   person animal
tired          cansado       estar   person animal
angry          enfadado      estar   person animal
sick           enfermo       estar   person animal
intelligent    inteligente   ser     person animal
kind           amable        ser     person
funny          divertido     ser     person animal
clean          limpio        estar   object clothing place
dirty          sucio         estar   object clothing place
quiet          tranquilo     estar   person animal place
empty          vacío         estar   container
full           lleno         estar   container
modern         moderno       ser     object building town
famous         famoso        ser     person place
"""

_NAME_TABLE = """
maria maría f
juan juan m
ana ana f
pedro pedro m
lucia lucía f
carlos carlos m
sofia sofía f
pablo pablo m
"""


def _parse_nouns() -> tuple[Noun, ...]:
    nouns = []
    for line in _NOUN_TABLE.strip().splitlines():
        if line.startswith("#"):
            continue
        en, plural, es, gender, *tags = line.split()
        extra = {"el": "el" in tags, "prep": "at" if "at" in tags else "in"}
        tags = frozenset(t for t in tags if t not in ("el", "at"))
        if plural == "mass":
            nouns.append(Noun(en, es, gender, tags, **extra))
        else:
            en_pl = en + "s" if plural == "-" else plural
            nouns.append(Noun(en, es, gender, tags, en_pl, _es_plural(es), **extra))
    return tuple(nouns)


def _adjective_forms(masc: str) -> dict:
    if masc.endswith("o"):
        fem = masc[:-1] + "a"
        return {("m", False): masc, ("f", False): fem, ("m", True): masc + "s", ("f", True): fem + "s"}
    plural = "jóvenes" if masc == "joven" else _es_plural(masc)
    return {("m", False): masc, ("f", False): masc, ("m", True): plural, ("f", True): plural}


def _parse_adjectives() -> tuple[Adjective, ...]:
    adjectives = []
    for line in _ADJECTIVE_TABLE.strip().splitlines():
        if line.startswith("#"):
            continue
        en, masc, copula, *tags = line.split()
        adjectives.append(Adjective(en, _adjective_forms(masc), frozenset(tags), copula))
    return tuple(adjectives)


# Verbs: English base / 3s / past (+ particle), the Spanish infinitive, irregular tables, classes.
_ENDINGS = {
    "ar": {"present": ("o", "as", "a", "amos", "an"), "past": ("é", "aste", "ó", "amos", "aron"),
           "imperfect": ("aba", "abas", "aba", "ábamos", "aban")},
    "er": {"present": ("o", "es", "e", "emos", "en"), "past": ("í", "iste", "ió", "imos", "ieron"),
           "imperfect": ("ía", "ías", "ía", "íamos", "ían")},
    "ir": {"present": ("o", "es", "e", "imos", "en"), "past": ("í", "iste", "ió", "imos", "ieron"),
           "imperfect": ("ía", "ías", "ía", "íamos", "ían")},
}
_FUTURE = ("é", "ás", "á", "emos", "án")

_IRREGULAR = {  # only the tenses that differ from the regular pattern
    "ser": {"present": "soy eres es somos son", "past": "fui fuiste fue fuimos fueron",
            "imperfect": "era eras era éramos eran"},
    "estar": {"present": "estoy estás está estamos están",
              "past": "estuve estuviste estuvo estuvimos estuvieron"},
    "tener": {"present": "tengo tienes tiene tenemos tienen",  # past: the imperfect, see _STATIVE
              "future": "tendré tendrás tendrá tendremos tendrán"},
    "ir": {"present": "voy vas va vamos van", "past": "fui fuiste fue fuimos fueron",
           "imperfect": "iba ibas iba íbamos iban"},
    "querer": {"present": "quiero quieres quiere queremos quieren",
               "future": "querré querrás querrá querremos querrán"},  # past: the imperfect, see _STATIVE
    "ver": {"present": "veo ves ve vemos ven", "past": "vi viste vio vimos vieron",
            "imperfect": "veía veías veía veíamos veían"},
    "conocer": {"present": "conozco conoces conoce conocemos conocen"},
    "encontrar": {"present": "encuentro encuentras encuentra encontramos encuentran"},
    "leer": {"past": "leí leíste leyó leímos leyeron"},
    "abrazar": {"past": "abracé abrazaste abrazó abrazamos abrazaron"},
    "buscar": {"past": "busqué buscaste buscó buscamos buscaron"},
}


def conjugate(infinitive: str) -> dict:
    """The Spanish table ``{tense: {person: form}}`` (present, past = preterite, future, imperfect) of a
    verb: the regular endings of its class (-ar, -er, -ir), overridden by ``_IRREGULAR``."""
    stem, kind = infinitive[:-2], infinitive[-2:]
    table = {tense: dict(zip(PERSONS, (stem + e for e in endings))) for tense, endings in _ENDINGS[kind].items()}
    table["future"] = dict(zip(PERSONS, (infinitive + e for e in _FUTURE)))
    for tense, forms in _IRREGULAR.get(infinitive, {}).items():
        table[tense] = dict(zip(PERSONS, forms.split()))
    return table


_STATIVE = ("querer", "tener", "conocer")
"""Verbs of state, whose English past is the Spanish imperfect (*I had a dog* -> *tenía un perro*; the
preterite *tuve* would mean "I got"), as for ser and estar (*was* -> *era*, *estaba*)."""

_VERB_TABLE = """
# english          3s         past      spanish     objects / subjects
eat                eats       ate       comer       food / person animal
drink              drinks     drank     beber       drink / person animal
read               reads      read      leer        readable
write              writes     wrote     escribir    writable
buy                buys       bought    comprar     object clothing food drink animal
sell               sells      sold      vender      object clothing food drink animal
open               opens      opened    abrir       openable
wash               washes     washed    lavar       washable clothing
cook               cooks      cooked    cocinar     cookable
need               needs      needed    necesitar   object clothing food drink
look+for           looks      looked    buscar      object clothing person animal / person animal
see                sees       saw       ver         person animal object clothing place / person animal
watch              watches    watched   mirar       person animal
love               loves      loved     querer      person
want               wants      wanted    querer      object clothing food drink animal / person animal
have               has        had       tener       object clothing animal family
help               helps      helped    ayudar      person
call               calls      called    llamar      person
visit              visits     visited   visitar     person place
wait+for           waits      waited    esperar     person
hug                hugs       hugged    abrazar     person animal
know               knows      knew      conocer     person place
paint              paints     painted   pintar      paintable
draw               draws      drew      dibujar     person animal object place
find               finds      found     encontrar   object clothing animal / person animal
break              breaks     broke     romper      breakable
clean              cleans     cleaned   limpiar     object clothing place
"""


def _parse_verbs() -> tuple[Verb, ...]:
    verbs = []
    for line in _VERB_TABLE.strip().splitlines():
        if line.startswith("#"):
            continue
        head, _, classes = line.partition(" / ") if " / " in line else (line, "", "")
        en, en_3s, en_past, infinitive, *objects = head.split()
        en, _, particle = en.partition("+")
        subjects = frozenset(classes.split()) if classes else frozenset({"person"})
        table = conjugate(infinitive)
        if infinitive in _STATIVE:
            table["past"] = table["imperfect"]
        verbs.append(Verb(en, en_3s, en_past, infinitive, table, frozenset(objects), subjects, particle or None))
    return tuple(verbs)


NOUNS = _parse_nouns()
ADJECTIVES = _parse_adjectives()
VERBS = _parse_verbs()
NAMES = tuple((en, es, gender) for en, es, gender in (ln.split() for ln in _NAME_TABLE.strip().splitlines()))
# The special verbs, used by their own sentence patterns.
SER, ESTAR, IR, VIVIR, GUSTAR = (conjugate(v) for v in ("ser", "estar", "ir", "vivir", "gustar"))
QUERER = conjugate("querer")

_SUBJECT_PRONOUNS = {"1s": "i", "2s": "you", "3s": ("he", "she"), "1p": "we", "3p": "they"}
_OBJECT_PRONOUNS = (("me", "me", "1s"), ("you", "te", "2s"), ("him", "lo", "3s"), ("her", "la", "3s"),
                    ("us", "nos", "1p"), ("them", "los", "3p"))
_DATIVE = {"1s": "me", "2s": "te", "3s": "le", "1p": "nos", "3p": "les"}
_NUMBERS = (("two", "dos"), ("three", "tres"), ("four", "cuatro"), ("five", "cinco"), ("six", "seis"),
            ("seven", "siete"), ("eight", "ocho"), ("nine", "nueve"), ("ten", "diez"))
_POSSESSIVES = {"my": ("mi", "mi", "mis", "mis"), "your": ("tu", "tu", "tus", "tus"),
                "his": ("su", "su", "sus", "sus"), "her": ("su", "su", "sus", "sus"),
                "our": ("nuestro", "nuestra", "nuestros", "nuestras"), "their": ("su", "su", "sus", "sus")}
_PREPOSITIONS = {"in": ("en",), "on": ("en",), "at": ("en",), "under": ("debajo", "de"),
                 "near": ("cerca", "de"), "behind": ("detrás", "de")}
_FUNCTION_WORDS = {  # English function words and their Spanish counterparts, counted in the lexicon
    "the": "el la los las", "a": "un una", "this": "este esta", "these": "estos estas", "not": "no",
    "with": "con", "to": "a al", "where": "dónde", "?": "¿ ?",
}


def _lexicon() -> dict[str, tuple[str, ...]]:
    """Every English lexical entry and its Spanish forms: nouns, adjectives, verbs, names, pronouns,
    numbers, possessives, prepositions and the other function words."""
    lex = {}
    for n in NOUNS:
        lex[f"noun:{n.en}"] = (n.es,) + ((n.es_pl,) if n.es_pl else ())
    for a in ADJECTIVES:
        lex[f"adjective:{a.en}"] = tuple(dict.fromkeys(a.forms.values()))
    for v in VERBS:
        lex[f"verb:{v.en}" + (f" {v.particle}" if v.particle else "")] = tuple(
            dict.fromkeys(f for tense in v.es.values() for f in tense.values()))
    for word, table in (("be (ser)", SER), ("be (estar)", ESTAR), ("go", IR), ("live", VIVIR), ("like", GUSTAR)):
        lex[f"verb:{word}"] = tuple(dict.fromkeys(f for tense in table.values() for f in tense.values()))
    for en, es, _ in NAMES:
        lex[f"name:{en}"] = (es,)
    for en, es, _ in _OBJECT_PRONOUNS:
        lex[f"object pronoun:{en}"] = (es,)
    for person, en in _SUBJECT_PRONOUNS.items():
        for word in (en,) if isinstance(en, str) else en:
            lex[f"subject pronoun:{word}"] = ("(dropped)", _DATIVE[person])
    for en, es in _NUMBERS:
        lex[f"number:{en}"] = (es,)
    for en, forms in _POSSESSIVES.items():
        lex[f"possessive:{en}"] = tuple(dict.fromkeys(forms))
    for en, es in _PREPOSITIONS.items():
        lex[f"preposition:{en}"] = (" ".join(es),)
    for en, es in _FUNCTION_WORDS.items():
        lex[f"function word:{en}"] = tuple(es.split())
    return lex


LEXICON = _lexicon()
"""Every lexical entry, ``"kind:english" -> Spanish forms``: over 200 entries."""

# --- building one sentence pair ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One sentence pair with its gold alignment.

    en, es: the tokens; sure, possible: sets of links (i, j), Spanish token i to English token j (P ⊇ S);
    kind: the sentence pattern ("transitive", "clitic", "gustar", ...); tense; combos: the (noun,
    adjective) combinations it contains (English lemmas), which decide its split.
    """

    en: tuple[str, ...]
    es: tuple[str, ...]
    sure: frozenset[tuple[int, int]]
    possible: frozenset[tuple[int, int]]
    kind: str
    tense: str
    combos: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    @property
    def source(self) -> str:
        return " ".join(self.en)

    @property
    def target(self) -> str:
        return " ".join(self.es)


class _Builder:
    """Collects English tokens under keys, then Spanish tokens linked to those keys (a key that the
    English sentence lacks, e.g. an auxiliary in an affirmative sentence, is skipped)."""

    def __init__(self):
        self.en: list[str] = []
        self.keys: dict[str, int] = {}
        self.es: list[str] = []
        self.sure: set[tuple[int, int]] = set()
        self.possible: set[tuple[int, int]] = set()

    def english(self, word: str, key: str | None = None) -> None:
        if key is not None:
            if key in self.keys:
                raise AssertionError(f"English key {key!r} used twice")  # a bug in a pattern
            self.keys[key] = len(self.en)
        self.en.append(word)

    def spanish(self, word: str, sure: str | None = None, possible: Iterable[str] = ()) -> None:
        i = len(self.es)
        self.es.append(word)
        if sure is not None:
            j = self.keys[sure]  # a sure link must exist
            self.sure.add((i, j))
            self.possible.add((i, j))
        for key in possible:
            if key in self.keys:
                self.possible.add((i, self.keys[key]))


@dataclass
class _NP:
    """A noun phrase: a noun with a determiner ("the", "a", "my"... "two"... or None for a bare noun) and
    an optional adjective, or a name."""

    noun: Noun | None
    plural: bool = False
    det: str | None = None
    adjective: Adjective | None = None
    name: tuple[str, str, str] | None = None

    @property
    def gender(self) -> str:
        return self.name[2] if self.name else self.noun.gender

    @property
    def person(self) -> str:
        return "3p" if self.plural else "3s"

    @property
    def tags(self) -> frozenset[str]:
        return frozenset({"person"}) if self.name else self.noun.tags

    @property
    def combos(self) -> set[tuple[str, str]]:
        return {(self.noun.en, self.adjective.en)} if self.adjective and self.noun else set()

    def english(self, b: _Builder, role: str) -> None:
        if self.name:
            b.english(self.name[0], f"{role}.noun")
            return
        words = []
        if self.det is not None:
            words.append((self.det, "det"))
        if self.adjective is not None:
            words.append((self.adjective.en, "adj"))
        words.append((self.noun.en_pl if self.plural else self.noun.en, "noun"))
        if words[0][0] == "a" and words[1][0][0] in "aeiou":
            words[0] = ("an", "det")
        for word, part in words:
            b.english(word, f"{role}.{part}")

    def spanish_determiner(self) -> str | None:
        """The Spanish determiner, agreeing with the noun; None for a bare noun or a name."""
        if self.det is None or self.name:
            return None
        g, pl = self.gender, self.plural
        if self.det == "the":
            if self.noun.el and not pl:
                return "el"
            return {("m", False): "el", ("f", False): "la", ("m", True): "los", ("f", True): "las"}[g, pl]
        if self.det in ("a", "an"):
            return "un" if g == "m" or self.noun.el else "una"
        if self.det in ("this", "these"):
            return {("m", False): "este", ("f", False): "esta", ("m", True): "estos", ("f", True): "estas"}[g, pl]
        if self.det in _POSSESSIVES:
            return _POSSESSIVES[self.det][(g == "f") + 2 * pl]
        return dict(_NUMBERS)[self.det]

    def spanish(self, b: _Builder, role: str, article: str | None = None, skip_det: bool = False) -> None:
        """Spanish order: determiner, noun, adjective. ``article``: an article Spanish needs where English
        has none (*I like dogs* -> *me gustan los perros*), possibly linked to the noun."""
        if self.name:
            b.spanish(self.name[1], f"{role}.noun")
            return
        det = self.spanish_determiner()
        if det is not None and not skip_det:
            b.spanish(det, f"{role}.det")
        elif det is None and article is not None:
            b.spanish(article, None, (f"{role}.noun",))
        b.spanish(self.noun.es_pl if self.plural else self.noun.es, f"{role}.noun")
        if self.adjective is not None:
            b.spanish(self.adjective.form(self.gender, self.plural), f"{role}.adj")

    def article(self) -> str:
        """The definite article of this noun (for a bare English noun that Spanish gives one)."""
        return _NP(self.noun, self.plural, "the").spanish_determiner()


# --- sampling ------------------------------------------------------------------------------------------

_TENSES = ("present", "past", "future")
_TENSE_WEIGHTS = (0.5, 0.25, 0.25)
_SIZES = ("big", "small")
_ODD = {("baby", "old"), ("baby", "tall"), ("baby", "short"), ("banana", "red"), ("lemon", "red")}
_ANIMAL_DRINKS = ("water", "milk")


def _suits(noun: Noun, adjective: Adjective) -> bool:
    """Whether the grammar may put ``adjective`` with ``noun``: the classes match, and the pair is not one
    a speaker would find odd (*the big meat*: size does not describe a mass noun; *an old baby*)."""
    return bool(adjective.tags & noun.tags) and not (noun.mass and adjective.en in _SIZES) and \
        (noun.en, adjective.en) not in _ODD
_ANIMATE_VERBS = ("hug", "watch")  # their animal objects take the personal *a* too: *abrazo al gato*
_NOT_AFTER_WANT = ("want", "love", "need")  # "I want to want", "I want to need": not said


class _Grammar:
    """The sentence patterns. Each ``_pattern`` method samples one sentence with a ``random.Random``."""

    def __init__(self, rng: random.Random, fixed: dict | None = None):
        self.rng = rng
        self.fixed = fixed or {}  # choices made in advance (``example``), by name
        self.patterns = (
            (self.transitive, 0.30), (self.clitic, 0.14), (self.gustar, 0.10), (self.copula, 0.13),
            (self.location, 0.07), (self.go, 0.07), (self.live, 0.04), (self.want_to, 0.10),
            (self.where, 0.05),
        )

    # -- choices --
    def pick(self, name: str, draw):
        """The fixed choice ``name`` if there is one, else ``draw()``."""
        return self.fixed[name] if name in self.fixed else draw()

    def choice(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def weighted(self, items, weights):
        return self.rng.choices(items, weights)[0]

    def flip(self, p: float) -> bool:
        return self.rng.random() < p

    @staticmethod
    @functools.cache
    def nouns(tags: frozenset[str]) -> list[Noun]:
        return [n for n in NOUNS if n.tags & tags]

    @staticmethod
    @functools.cache
    def adjectives(noun_tags: frozenset[str]) -> list[Adjective]:
        return [a for a in ADJECTIVES if a.tags & noun_tags]

    def adjective_for(self, noun: Noun, p: float = 0.5) -> Adjective | None:
        if not self.flip(p):
            return None
        options = [a for a in self.adjectives(noun.tags) if _suits(noun, a)]
        return self.choice(options) if options else None

    def noun_phrase(self, tags: Iterable[str], *, bare: bool = False, adjective: float = 0.5,
                    names: float = 0.0, plural: float = 0.3) -> _NP:
        """A noun phrase whose noun has one of ``tags``; ``bare`` allows a bare plural or mass noun."""
        tags = frozenset(tags)
        if "person" in tags and self.flip(names):
            return _NP(None, name=self.choice(NAMES))
        noun = self.choice(self.nouns(tags))
        is_plural = not noun.mass and self.flip(plural) and "singular" not in noun.tags  # padres: parents
        if noun.mass:
            dets = ["the", "my", "your", "his", "her", "our", "their", "this"] + ([None] * 3 if bare else [])
        elif is_plural:
            dets = ["the"] * 4 + ["my", "your", "his", "her", "our", "their", "these"] + \
                   ["number"] * 4 + ([None] * 3 if bare else [])
        else:
            dets = ["the"] * 5 + ["a"] * 3 + ["my", "your", "his", "her", "our", "their", "this"]
        if "nopossessive" in noun.tags:  # "my man": not what English says
            dets = [d for d in dets if d not in _POSSESSIVES]
        det = self.choice(dets)
        if det == "number":
            det = self.choice(_NUMBERS)[0]
        return _NP(noun, is_plural, det, self.adjective_for(noun, adjective))

    def subject(self, tags: frozenset[str] = frozenset({"person"}), pronoun: float = 0.5):
        """A subject: ("pronoun", person, english word, gender) or ("np", _NP)."""
        if "person" in tags and self.flip(pronoun):
            person = self.choice(PERSONS)
            word = _SUBJECT_PRONOUNS[person]
            gender = "m"
            if not isinstance(word, str):
                word, gender = self.choice(((word[0], "m"), (word[1], "f")))
            return ("pronoun", person, word, gender)
        return ("np", self.noun_phrase(tags, names=0.2, plural=0.25))

    def tense(self, tenses=_TENSES, weights=_TENSE_WEIGHTS) -> str:
        return self.weighted(tenses, weights[:len(tenses)])

    # -- clause skeletons --
    @staticmethod
    def _person(subject) -> str:
        return subject[1] if subject[0] == "pronoun" else subject[1].person

    @staticmethod
    def _subject_english(b: _Builder, subject) -> None:
        if subject[0] == "pronoun":
            b.english(subject[2], "subj.pron")
        else:
            subject[1].english(b, "subj")

    def _english_clause(self, b: _Builder, subject, verb: tuple[str, str, str], tense: str, negative: bool,
                        question: bool, particle: str | None = None) -> None:
        """Subject and verb group in English, with do-support: verb = (base, 3s, past)."""
        person = self._person(subject)
        base, third, past = verb
        if question:
            aux = {"present": "does" if person == "3s" else "do", "past": "did", "future": "will"}[tense]
            b.english(aux, "aux")
            self._subject_english(b, subject)
            b.english(base, "verb")
        else:
            self._subject_english(b, subject)
            if negative:
                aux = {"present": "does" if person == "3s" else "do", "past": "did", "future": "will"}[tense]
                b.english(aux, "aux")
                b.english("not", "not")
                b.english(base, "verb")
            elif tense == "future":
                b.english("will", "aux")
                b.english(base, "verb")
            else:
                b.english({"present": third if person == "3s" else base, "past": past}[tense], "verb")
        if particle:
            b.english(particle, "particle")

    def _english_be(self, b: _Builder, subject, tense: str, negative: bool, question: bool) -> None:
        person = self._person(subject)
        present = {"1s": "am", "3s": "is"}.get(person, "are")
        past = "was" if person in ("1s", "3s") else "were"
        if question:
            if tense == "future":
                b.english("will", "aux")
                self._subject_english(b, subject)
                b.english("be", "verb")
            else:
                b.english(present if tense == "present" else past, "verb")
                self._subject_english(b, subject)
            return
        self._subject_english(b, subject)
        if tense == "future":
            b.english("will", "aux")
            if negative:
                b.english("not", "not")
            b.english("be", "verb")
        else:
            b.english(present if tense == "present" else past, "verb")
            if negative:
                b.english("not", "not")

    @staticmethod
    def _verb_links() -> tuple[str, ...]:
        return ("subj.pron", "aux", "particle")

    def _spanish_verb_group(self, b: _Builder, form: str, negative: bool, clitic: str | None = None,
                            clitic_key: str | None = None) -> None:
        if negative:
            b.spanish("no", "not", ("aux",))
        if clitic is not None:
            b.spanish(clitic, clitic_key)
        b.spanish(form, "verb", self._verb_links())

    def _spanish_subject(self, b: _Builder, subject) -> None:
        if subject[0] == "np":
            subject[1].spanish(b, "subj")

    @staticmethod
    def _open_question(b: _Builder) -> None:
        b.spanish("¿", None, ("?", "first"))

    @staticmethod
    def _close_question(b: _Builder) -> None:
        b.english("?", "?")

    # -- the patterns; each returns (builder, kind, tense, combos) --
    def _clause(self, subject, verb_forms: dict, tense: str, negative: bool, question: bool,
                english_verb: tuple[str, str, str], particle: str | None, render_rest_en, render_rest_es,
                clitic: tuple[str, str] | None = None) -> _Builder:
        """A clause with a lexical verb: English S (do) V rest; Spanish [¿] S/V order, clitic, rest [?]."""
        b = _Builder()
        self._english_clause(b, subject, english_verb, tense, negative, question, particle)
        render_rest_en(b)
        if question:
            self._close_question(b)
        b.keys.setdefault("first", 0)
        form = verb_forms[tense][self._person(subject)]
        if question:
            self._open_question(b)
            self._spanish_verb_group(b, form, negative, *(clitic or (None, None)))
            self._spanish_subject(b, subject)  # ¿come el niño la manzana?
        else:
            self._spanish_subject(b, subject)
            self._spanish_verb_group(b, form, negative, *(clitic or (None, None)))
        render_rest_es(b)
        if question:
            b.spanish("?", "?")
        return b

    def _mood(self, question: float = 0.2, negative: float = 0.2) -> tuple[bool, bool]:
        is_question = self.pick("question", lambda: self.flip(question))
        return is_question, (not is_question) and self.pick("negative", lambda: self.flip(negative))

    def _object_np(self, verb: Verb) -> _NP:
        np = self.noun_phrase(verb.objects, bare=True, names=0.15 if "person" in verb.objects else 0.0)
        if verb.en == "have" and np.name:
            np = self.noun_phrase({"family"})
        if verb.en == "have" and "family" in np.tags and np.det not in ("a", *(n for n, _ in _NUMBERS)):
            # "lucía has the aunt": a family member one has is indefinite (*tiene una tía*, *tiene dos tías*)
            np = _NP(np.noun, np.plural, self.choice(_NUMBERS)[0] if np.plural else "a", np.adjective)
        return np

    @staticmethod
    def _personal_a(b: _Builder, np: _NP, role: str, animals: bool = False) -> bool:
        """Spanish marks a person object with *a* (*a + el* = *al*), and an animal one treated as someone
        (``animals``: *abrazo al perro*); True if it wrote the determiner too."""
        if "person" not in np.tags and not (animals and "animal" in np.tags):
            return False
        if np.spanish_determiner() == "el":
            b.spanish("al", f"{role}.det", (f"{role}.noun",))
            return True
        b.spanish("a", None, (f"{role}.det", f"{role}.adj", f"{role}.noun"))
        return False

    def _with_adjunct(self, verb: Verb) -> _NP | None:
        if "with" in self.fixed:
            return self.fixed["with"]
        if verb.en in ("eat", "drink", "cook", "buy", "visit", "see", "watch", "paint", "draw") and self.flip(0.1):
            return self.noun_phrase({"person"}, names=0.2, plural=0.15, adjective=0.3)
        return None

    def _verb_fits(self, verb: Verb) -> bool:
        """Whether ``verb`` suits the subject and object fixed in advance (by ``example``), if any."""
        subject, obj = self.fixed.get("subject"), self.fixed.get("object")
        return (subject is None or bool(_subject_tags(subject) & verb.subjects)) and \
            (obj is None or isinstance(obj, tuple) or bool(obj.tags & verb.objects))

    def transitive(self):
        verb = self.pick("verb", lambda: self.choice([v for v in VERBS if self._verb_fits(v)]))
        subject = self.pick("subject", lambda: self.subject(verb.subjects))
        obj = self.pick("object", lambda: self._object_np(verb))
        while subject[0] == "np" and obj.name and subject[1].name == obj.name and "object" not in self.fixed:
            obj = self._object_np(verb)  # "pedro helps pedro": draw another object of the verb's classes
        while verb.en == "drink" and subject[0] == "np" and "animal" in subject[1].tags and \
                obj.noun.en not in _ANIMAL_DRINKS and "object" not in self.fixed:
            obj = self._object_np(verb)  # the cat drinks milk, not wine
        tense = self.pick("tense", self.tense)
        question, negative = self._mood()
        adjunct = self._with_adjunct(verb)
        if tense == "past" and verb.en == verb.en_past and not (question or negative) and self._person(subject) != "3s":
            tense = "present" if self.flip(0.5) else "future"  # "I read the book": present or past? avoid
        personal = verb.en != "have"

        def rest_en(b):
            obj.english(b, "obj")
            if adjunct:
                b.english("with", "with")
                adjunct.english(b, "adj2")

        def rest_es(b):
            skip = personal and self._personal_a(b, obj, "obj", animals=verb.en in _ANIMATE_VERBS)
            obj.spanish(b, "obj", skip_det=skip)
            if adjunct:
                b.spanish("con", "with")
                adjunct.spanish(b, "adj2")

        b = self._clause(subject, verb.es, tense, negative, question, (verb.en, verb.en_3s, verb.en_past),
                         verb.particle, rest_en, rest_es)
        combos = obj.combos | (subject[1].combos if subject[0] == "np" else set())
        return b, "transitive", tense, combos | (adjunct.combos if adjunct else set())

    def clitic(self):
        verbs = [v for v in VERBS if "person" in v.objects and self._verb_fits(v)]
        verb = self.pick("verb", lambda: self.choice(verbs))
        def draw_subject():
            while True:
                subject = self.subject(frozenset({"person"}) & verb.subjects or verb.subjects, pronoun=0.65)
                fixed_object = self.fixed.get("object")
                if not (fixed_object and subject[0] == "pronoun" and _reflexive(subject[1], fixed_object[2])):
                    return subject

        subject = self.pick("subject", draw_subject)
        person = self._person(subject)
        options = [p for p in _OBJECT_PRONOUNS if not (subject[0] == "pronoun" and _reflexive(person, p[2]))]
        en_obj, es_obj, _ = self.pick("object", lambda: self.choice(options))
        tense = self.pick("tense", self.tense)
        question, negative = self._mood(0.25)

        def rest_en(b):
            b.english(en_obj, "obj")

        b = self._clause(subject, verb.es, tense, negative, question, (verb.en, verb.en_3s, verb.en_past),
                         verb.particle, rest_en, lambda b: None, clitic=(es_obj, "obj"))
        return b, "clitic", tense, subject[1].combos if subject[0] == "np" else set()

    def gustar(self):
        subject = self.pick("subject", self._pronoun)
        person = subject[1]
        obj = self.pick("object", lambda: self.noun_phrase({"animal", "food", "drink", "object", "clothing",
                                                            "place"}, bare=True))
        tense = self.pick("tense", self.tense)
        question, negative = self._mood()
        b = _Builder()
        self._english_clause(b, subject, ("like", "likes", "liked"), tense, negative, question)
        obj.english(b, "obj")
        if question:
            self._close_question(b)
            self._open_question(b)
        b.keys.setdefault("first", 0)
        if negative:
            b.spanish("no", "not", ("aux",))
        b.spanish(_DATIVE[person], "subj.pron")
        b.spanish(GUSTAR[tense]["3p" if obj.plural else "3s"], "verb", ("aux",))
        obj.spanish(b, "obj", article=obj.article())
        if question:
            b.spanish("?", "?")
        return b, "gustar", tense, obj.combos

    def _pronoun(self):
        person = self.choice(PERSONS)
        word = _SUBJECT_PRONOUNS[person]
        if not isinstance(word, str):
            word = self.choice(word)
        return ("pronoun", person, word, "m")

    def _definite(self, subject):
        """A subject with a definite, possessive or demonstrative determiner: *where was a woman?* and
        *a cat is under the table* are not what people say."""
        return ("np", self._definite_np(subject[1])) if subject[0] == "np" else subject

    def _definite_np(self, np: _NP) -> _NP:
        if np.det not in ("a", "an") and not (np.det is None and not np.name):
            return np
        dets = ["the", "the", "the", "this" if not np.plural else "these"]
        if "nopossessive" not in np.noun.tags:
            dets += ["my", "your", "our"]
        return _NP(np.noun, np.plural, self.choice(dets), np.adjective)

    def _subject_for_adjective(self):
        """A subject and an adjective that suits it, neither the subject's own adjective nor its opposite
        (*the cold rice is hot*)."""
        tags = frozenset({"person", "animal", "object", "clothing", "place", "food", "drink"})
        fixed_adjective = self.fixed.get("adjective")
        if fixed_adjective is not None:
            tags = fixed_adjective.tags
        subject = self.pick("subject", lambda: self._definite(self.subject(tags, pronoun=0.35)))
        if fixed_adjective is not None and "subject" not in self.fixed and subject[0] == "np" and \
                subject[1].adjective is not None and _clash(fixed_adjective, subject[1].adjective):
            np = subject[1]
            subject = ("np", _NP(np.noun, np.plural, np.det, None, np.name))
        if subject[0] == "pronoun":
            tags, gender, plural = frozenset({"person"}), subject[3], subject[1] in ("1p", "3p")
        else:
            np = subject[1]
            tags, gender, plural = np.tags, np.gender, np.plural
        options = self.adjectives(tags)
        if subject[0] == "np" and subject[1].adjective is not None:
            options = [a for a in options if not _clash(a, subject[1].adjective)]
        if subject[0] == "np" and subject[1].noun is not None:
            options = [a for a in options if _suits(subject[1].noun, a)]
        return subject, self.pick("adjective", lambda: self.choice(options)), gender, plural

    def copula(self):
        subject, adjective, gender, plural = self._subject_for_adjective()
        tense = self.pick("tense", self.tense)
        question, negative = self._mood()
        table = SER if adjective.copula == "ser" else ESTAR
        form = table["imperfect" if tense == "past" else tense][self._person(subject)]
        b = _Builder()
        self._english_be(b, subject, tense, negative, question)
        b.english(adjective.en, "pred")
        if question:
            self._close_question(b)
        b.keys.setdefault("first", 0)
        pred = adjective.form(gender, plural)
        if question:  # ¿está caliente la sopa?
            self._open_question(b)
            b.spanish(form, "verb", self._verb_links())
            b.spanish(pred, "pred")
            self._spanish_subject(b, subject)
            b.spanish("?", "?")
        else:
            self._spanish_subject(b, subject)
            if negative:
                b.spanish("no", "not", ("aux",))
            b.spanish(form, "verb", self._verb_links())
            b.spanish(pred, "pred")
        combos = set() if subject[0] == "pronoun" or subject[1].name else {(subject[1].noun.en, adjective.en)}
        if subject[0] == "np":
            combos |= subject[1].combos
        return b, "copula", tense, combos

    def _location_np(self, subject_tags: frozenset[str]) -> tuple[str, _NP]:
        if "portable" in subject_tags:
            prep = self.choice(("on", "in", "under", "near"))
        elif "small" in subject_tags:
            prep = self.choice(("in", "under", "near", "behind"))
        else:
            prep = self.choice(("in", "near", "behind"))
        tags = {"on": {"surface"}, "in": {"container", "place"} if "portable" in subject_tags else {"place"},
                "under": {"surface", "big"}, "near": {"place", "object"}, "behind": {"building", "big"}}[prep]
        np = self.noun_phrase(tags, plural=0.0, adjective=0.3)
        if prep == "in" and "place" in np.tags:
            prep = np.noun.prep  # "at the beach"
        return prep, np

    def _spanish_place(self, b: _Builder, prep: str, np: _NP) -> None:
        words = _PREPOSITIONS[prep]
        b.spanish(words[0], "prep")
        skip = False
        if len(words) == 2:
            if np.spanish_determiner() == "el":
                b.spanish("del", "loc.det", ("prep",))
                skip = True
            else:
                b.spanish("de", None, ("prep",))
        np.spanish(b, "loc", skip_det=skip)

    def location(self):
        subject = self.pick("subject", lambda: self._definite(
            self.subject(frozenset({"person", "animal", "object"}), pronoun=0.3)))
        if subject[0] == "np" and not (subject[1].tags & {"person", "animal", "portable"}):
            subject = ("np", self._definite_np(self.noun_phrase({"portable"}, names=0.0, plural=0.25)))
        tags = frozenset({"person"}) if subject[0] == "pronoun" else subject[1].tags
        prep, place = self._location_np(tags)
        tense = self.pick("tense", self.tense)
        question, negative = self._mood()
        form = ESTAR["imperfect" if tense == "past" else tense][self._person(subject)]
        b = _Builder()
        self._english_be(b, subject, tense, negative, question)
        b.english(prep, "prep")
        place.english(b, "loc")
        if question:
            self._close_question(b)
        b.keys.setdefault("first", 0)
        if question:  # ¿está el gato debajo de la mesa?
            self._open_question(b)
            b.spanish(form, "verb", self._verb_links())
            self._spanish_subject(b, subject)
        else:
            self._spanish_subject(b, subject)
            if negative:
                b.spanish("no", "not", ("aux",))
            b.spanish(form, "verb", self._verb_links())
        self._spanish_place(b, prep, place)
        if question:
            b.spanish("?", "?")
        combos = place.combos | (subject[1].combos if subject[0] == "np" else set())
        return b, "location", tense, combos

    def go(self):
        subject = self.pick("subject", self.subject)
        place = self.noun_phrase({"place"}, plural=0.0, adjective=0.4)
        tense = self.pick("tense", self.tense)
        question, negative = self._mood()
        adjunct = self.noun_phrase({"person"}, names=0.2, plural=0.15, adjective=0.3) if self.flip(0.15) else None

        def rest_en(b):
            b.english("to", "prep")
            place.english(b, "loc")
            if adjunct:
                b.english("with", "with")
                adjunct.english(b, "adj2")

        def rest_es(b):
            if place.spanish_determiner() == "el":
                b.spanish("al", "loc.det", ("prep",))
                place.spanish(b, "loc", skip_det=True)
            else:
                b.spanish("a", "prep")
                place.spanish(b, "loc")
            if adjunct:
                b.spanish("con", "with")
                adjunct.spanish(b, "adj2")

        b = self._clause(subject, IR, tense, negative, question, ("go", "goes", "went"), None, rest_en, rest_es)
        combos = place.combos | (subject[1].combos if subject[0] == "np" else set())
        return b, "go", tense, combos | (adjunct.combos if adjunct else set())

    def live(self):
        subject = self.pick("subject", self.subject)
        prep = self.choice(("in", "near"))
        place = self.noun_phrase({"town", "home"} if prep == "in" else {"place"}, plural=0.0, adjective=0.4)
        tense = self.pick("tense", lambda: self.tense(("present", "future"), (0.7, 0.3)))
        question, negative = self._mood()

        def rest_en(b):
            b.english(prep, "prep")
            place.english(b, "loc")

        b = self._clause(subject, VIVIR, tense, negative, question, ("live", "lives", "lived"), None, rest_en,
                         lambda b: self._spanish_place(b, prep, place))
        return b, "live", tense, place.combos | (subject[1].combos if subject[0] == "np" else set())

    def want_to(self):
        verb = self.pick("verb", lambda: self.choice([v for v in VERBS if v.en not in _NOT_AFTER_WANT
                                                      and self._verb_fits(v)]))
        subject = self.pick("subject", lambda: self.subject(frozenset({"person"})))
        obj = self.pick("object", lambda: self._object_np(verb))
        while subject[0] == "np" and obj.name and subject[1].name == obj.name and "object" not in self.fixed:
            obj = self._object_np(verb)  # "ana wants to draw ana": draw another object
        tense = self.pick("tense", lambda: self.tense(("present", "past"), (0.7, 0.3)))
        question, negative = self._mood()

        def rest_en(b):
            b.english(verb.en, "inf")
            if verb.particle:
                b.english(verb.particle, "inf.particle")
            obj.english(b, "obj")

        def rest_es(b):
            b.spanish(verb.infinitive, "inf", ("to", "inf.particle"))
            skip = verb.en != "have" and self._personal_a(b, obj, "obj", animals=verb.en in _ANIMATE_VERBS)
            obj.spanish(b, "obj", skip_det=skip)

        def add_to(b):  # "want to": the "to" sits between the two verbs
            b.english("to", "to")
            rest_en(b)

        table = dict(QUERER, past=QUERER["imperfect"])  # "I wanted to eat" -> "quería comer", as _STATIVE
        b = self._clause(subject, table, tense, negative, question, ("want", "wants", "wanted"), None, add_to,
                         rest_es)
        return b, "want_to", tense, obj.combos | (subject[1].combos if subject[0] == "np" else set())

    def where(self):
        subject = self.pick("subject", lambda: self._definite(
            self.subject(frozenset({"person", "animal", "portable"}), pronoun=0.3)))
        live = self.flip(0.3) and self.fixed.get("tense") != "past"
        if live and (subject[0] == "pronoun" or "person" in subject[1].tags):
            tense = self.pick("tense", lambda: self.tense(("present", "future"), (0.7, 0.3)))
            b = _Builder()
            b.english("where", "where")
            self._english_clause(b, subject, ("live", "lives", "lived"), tense, False, True)
            self._close_question(b)
            b.keys["first"] = 0
            self._open_question(b)
            b.spanish("dónde", "where")
            b.spanish(VIVIR[tense][self._person(subject)], "verb", self._verb_links())
            self._spanish_subject(b, subject)
            b.spanish("?", "?")
        else:
            tense = self.pick("tense", self.tense)
            b = _Builder()
            b.english("where", "where")
            self._english_be(b, subject, tense, False, True)
            self._close_question(b)
            b.keys["first"] = 0
            self._open_question(b)
            b.spanish("dónde", "where")
            b.spanish(ESTAR["imperfect" if tense == "past" else tense][self._person(subject)], "verb",
                      self._verb_links())
            self._spanish_subject(b, subject)
            b.spanish("?", "?")
        return b, "where", tense, subject[1].combos if subject[0] == "np" else set()

    def sentence(self) -> Pair:
        pattern = self.weighted([p for p, _ in self.patterns], [w for _, w in self.patterns])
        b, kind, tense, combos = pattern()
        return Pair(tuple(b.en), tuple(b.es), frozenset(b.sure), frozenset(b.possible), kind, tense,
                    frozenset(combos))


# --- one sentence, chosen -------------------------------------------------------------------------------

_ANTONYMS = (("big", "small"), ("old", "young"), ("old", "new"), ("hot", "cold"), ("clean", "dirty"),
             ("empty", "full"), ("expensive", "cheap"), ("tall", "short"), ("happy", "sad"),
             ("beautiful", "ugly"))
_COLOURS = frozenset({"red", "green", "blue", "yellow", "white", "black", "grey", "brown"})


def _clash(a: Adjective, b: Adjective) -> bool:
    """Whether a predicate ``a`` repeats or contradicts an attribute ``b`` (*the red car is blue*)."""
    return a.en == b.en or (a.en, b.en) in _ANTONYMS or (b.en, a.en) in _ANTONYMS or \
        (a.en in _COLOURS and b.en in _COLOURS)


PATTERNS = ("transitive", "clitic", "gustar", "copula", "location", "go", "live", "want_to", "where")
def _reflexive(subject_person: str, object_person: str) -> bool:
    """Whether an object pronoun would refer to the subject pronoun itself (*I see me*, *we see me*):
    Spanish would need a reflexive. Third persons are other people (*she loves him*, *they see them*)."""
    if subject_person == object_person:
        return subject_person in ("1s", "2s", "1p")
    return {subject_person, object_person} == {"1s", "1p"}


def _subject_tags(subject) -> frozenset[str]:
    return frozenset({"person"}) if subject[0] == "pronoun" else subject[1].tags


def _describe(subject) -> str:
    if subject[0] == "pronoun":
        return repr(subject[2])
    np = subject[1]
    return repr(np.name[0] if np.name else np.noun.en) + f" ({', '.join(sorted(np.tags - {'nopossessive'}))})"


_ALLOWED = {  # the choices each pattern takes
    "transitive": {"subject", "verb", "object", "tense", "question", "negative", "with"},
    "clitic": {"subject", "verb", "object", "tense", "question", "negative"},
    "gustar": {"subject", "object", "tense", "question", "negative"},
    "copula": {"subject", "adjective", "tense", "question", "negative"},
    "location": {"subject", "tense", "question", "negative"},
    "go": {"subject", "tense", "question", "negative"},
    "live": {"subject", "tense", "question", "negative"},
    "want_to": {"subject", "verb", "object", "tense", "question", "negative"},
    "where": {"subject", "tense"},
}
_PATTERN_TENSES = {"live": ("present", "future"), "want_to": ("present", "past")}
_PATTERN_SUBJECTS = {"location": {"person", "animal", "portable"}, "where": {"person", "animal", "portable"},
                     "go": {"person"}, "live": {"person"}, "want_to": {"person"}}
_GUSTAR_OBJECTS = frozenset({"animal", "food", "drink", "object", "clothing", "place"})


def _check_choices(pattern: str, fixed: dict) -> None:
    """Raise ValueError for choices the grammar would never make, as the sampler would not."""
    extra = set(fixed) - _ALLOWED[pattern]
    if extra:
        raise ValueError(f"the pattern {pattern!r} takes no {', '.join(sorted(extra))}; its choices are "
                         f"{', '.join(sorted(_ALLOWED[pattern]))}")
    subject, verb, obj = fixed.get("subject"), fixed.get("verb"), fixed.get("object")
    if "tense" in fixed and fixed["tense"] not in _PATTERN_TENSES.get(pattern, _TENSES):
        raise ValueError(f"the pattern {pattern!r} uses the tenses {', '.join(_PATTERN_TENSES[pattern])}, "
                         f"not {fixed['tense']!r}")
    if subject is not None and pattern in _PATTERN_SUBJECTS and not _subject_tags(subject) & \
            _PATTERN_SUBJECTS[pattern]:
        raise ValueError(f"the pattern {pattern!r} needs a subject that is one of "
                         f"{', '.join(sorted(_PATTERN_SUBJECTS[pattern]))}, got {_describe(subject)}")
    if pattern == "gustar":
        if subject is not None and subject[0] != "pronoun":
            raise ValueError(f"the 'gustar' pattern takes a pronoun subject (i, you, he, she, we, they), "
                             f"got {_describe(subject)}")
        if obj is not None and not obj.tags & _GUSTAR_OBJECTS:
            raise ValueError(f"'like' takes a thing, an animal, food or a place here, got "
                             f"{obj.name[0] if obj.name else obj.noun.en!r}")
    if pattern == "copula" and "adjective" in fixed:
        adjective = fixed["adjective"]
        if subject is not None and (not adjective.tags & _subject_tags(subject) or (
                subject[0] == "np" and subject[1].noun is not None and not _suits(subject[1].noun, adjective))):
            raise ValueError(f"{adjective.en!r} does not describe {_describe(subject)} in this grammar (it "
                             f"describes {', '.join(sorted(adjective.tags))})")
        if subject is not None and subject[0] == "np" and subject[1].adjective is not None and \
                _clash(adjective, subject[1].adjective):
            raise ValueError(f"'{subject[1].adjective.en} ... is {adjective.en}' repeats or contradicts itself")
    if pattern == "want_to" and verb is not None and verb.en in _NOT_AFTER_WANT:
        raise ValueError(f"'want to {verb.en}' is not a sentence of this grammar; use another verb")
    if verb is not None and pattern in ("transitive", "clitic", "want_to"):
        if subject is not None and not _subject_tags(subject) & verb.subjects:
            raise ValueError(f"{verb.en!r} takes a subject that is one of {', '.join(sorted(verb.subjects))}, "
                             f"got {_describe(subject)}")
        if pattern == "clitic" and "person" not in verb.objects:
            raise ValueError(f"{verb.en!r} does not take a person as its object, so no object pronoun")
        if pattern != "clitic" and obj is not None and not obj.tags & verb.objects:
            raise ValueError(f"{verb.en!r} takes an object that is one of {', '.join(sorted(verb.objects))}, "
                             f"got {obj.name[0] if obj.name else obj.noun.en!r}")
        if verb.en == "have" and obj is not None and pattern != "clitic" and obj.name:
            raise ValueError("'have' takes a thing, an animal or a family member, not a name")
    if pattern in ("transitive", "want_to") and verb is None and obj is not None and \
            not any(obj.tags & v.objects and (subject is None or _subject_tags(subject) & v.subjects)
                    for v in VERBS):
        raise ValueError(f"no verb of the lexicon takes {_describe(('np', obj))} as its object")
    if pattern == "clitic" and subject is not None and obj is not None and subject[0] == "pronoun" and \
            _reflexive(subject[1], obj[2]):
        raise ValueError(f"{subject[2]!r} ... {obj[0]!r} is the subject itself: Spanish would need a "
                         f"reflexive verb, which this grammar does not have")
    if subject is not None and obj is not None and subject[0] == "np" and not isinstance(obj, tuple) and \
            subject[1].name and subject[1].name == obj.name:
        raise ValueError("the subject and the object are the same person: Spanish would need a reflexive")
    if "with" in fixed and "person" not in fixed["with"].tags:
        raise ValueError("'with' takes a person here")


_DETERMINERS = {"the", "a", "an", "this", "these", *_POSSESSIVES, *(n for n, _ in _NUMBERS)}
_PRONOUN_SUBJECTS = {"i": ("1s", "m"), "you": ("2s", "m"), "he": ("3s", "m"), "she": ("3s", "f"),
                     "we": ("1p", "m"), "they": ("3p", "m")}


def _parse_np(text: str) -> _NP:
    """A noun phrase from English text: a name, or [determiner] [adjective] noun (*the red house*)."""
    words = text.lower().split()
    names = {en: (en, es, g) for en, es, g in NAMES}
    if len(words) == 1 and words[0] in names:
        return _NP(None, name=names[words[0]])
    det = words.pop(0) if words and words[0] in _DETERMINERS else None
    adjective = None
    if len(words) == 2:
        adjective = next((a for a in ADJECTIVES if a.en == words[0]), None)
        if adjective is None:
            raise ValueError(f"{words[0]!r} is not an adjective of the lexicon (in {text!r})")
        words = words[1:]
    noun = next(((n, w == n.en_pl) for n in NOUNS for w in words[:1] if w in (n.en, n.en_pl)), None)
    if len(words) != 1 or noun is None:
        raise ValueError(f"{text!r} is not a noun phrase of the grammar: [determiner] [adjective] noun, e.g. "
                         f"'the red house', or a name ({', '.join(names)})")
    noun, plural = noun
    if plural and "singular" in noun.tags:
        raise ValueError(f"{text!r}: the plural of {noun.es!r} means parents in Spanish; this grammar keeps "
                         f"{noun.en!r} singular")
    if adjective is not None and not _suits(noun, adjective):
        raise ValueError(f"{adjective.en!r} does not suit {noun.en!r} in this grammar (it describes "
                         f"{', '.join(sorted(adjective.tags))})")
    if det in _POSSESSIVES and "nopossessive" in noun.tags:
        raise ValueError(f"{text!r} is not what English says for a person; try 'the {noun.en}' or "
                         f"'my friend'")
    if det is None and not (plural or noun.mass):
        raise ValueError(f"{text!r} needs a determiner: a singular noun such as {noun.en!r} takes 'the', 'a', "
                         f"'my'...")
    return _NP(noun, plural, "a" if det == "an" else det, adjective)


def _parse_subject(text: str):
    if text.lower() in _PRONOUN_SUBJECTS:
        person, gender = _PRONOUN_SUBJECTS[text.lower()]
        return ("pronoun", person, text.lower(), gender)
    return ("np", _parse_np(text))


def example(pattern: str, *, seed: int = 0, **choices) -> Pair:
    """One sentence pair of ``pattern`` (one of ``PATTERNS``), with some choices fixed and the rest drawn
    with ``seed``. Choices: ``subject`` (a pronoun, a name or a noun phrase such as "the red house"),
    ``verb`` (English, e.g. "love", "look for"), ``object`` (a noun phrase; for "clitic" an object
    pronoun: me, you, him, her, us, them), ``adjective`` (for "copula"), ``tense`` ("present", "past",
    "future"), ``question`` and ``negative`` (True or False).

    >>> example("clitic", subject="i", verb="love", object="you", tense="present",
    ...         question=False, negative=False).target
    'te quiero'
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
    fixed = {}
    for name, value in choices.items():
        if name == "subject":
            fixed[name] = _parse_subject(value)
        elif name == "verb":
            base, _, particle = value.lower().partition(" ")
            verb = next((v for v in VERBS if v.en == base and (v.particle or "") == particle), None)
            if verb is None:
                raise ValueError(f"no verb {value!r} in the lexicon; try one of "
                                 f"{', '.join(v.en + (' ' + v.particle if v.particle else '') for v in VERBS)}")
            fixed[name] = verb
        elif name == "object" and pattern == "clitic":
            pronoun = next((p for p in _OBJECT_PRONOUNS if p[0] == value.lower()), None)
            if pronoun is None:
                raise ValueError(f"a clitic object is one of {', '.join(p[0] for p in _OBJECT_PRONOUNS)}, "
                                 f"got {value!r}")
            fixed[name] = pronoun
        elif name in ("object", "with"):
            fixed[name] = _parse_np(value)
        elif name == "adjective":
            fixed[name] = next((a for a in ADJECTIVES if a.en == value), None)
            if fixed[name] is None:
                raise ValueError(f"no adjective {value!r} in the lexicon")
        elif name == "tense":
            if value not in _TENSES:
                raise ValueError(f"tense must be one of {', '.join(_TENSES)}, got {value!r}")
            fixed[name] = value
        elif name in ("question", "negative"):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
            fixed[name] = value
        else:
            raise TypeError(f"unknown choice {name!r}: use subject, verb, object, adjective, tense, question, "
                            f"negative or with")
    _check_choices(pattern, fixed)
    grammar = _Grammar(random.Random(seed), fixed)
    b, kind, tense, combos = getattr(grammar, pattern)()
    return Pair(tuple(b.en), tuple(b.es), frozenset(b.sure), frozenset(b.possible), kind, tense,
                frozenset(combos))


SHOWCASE = (
    ("clitic", {"subject": "i", "verb": "love", "object": "you"}),
    ("clitic", {"subject": "you", "verb": "love", "object": "me"}),
    ("clitic", {"subject": "you", "verb": "love", "object": "me", "question": True}),
    ("clitic", {"subject": "i", "verb": "see", "object": "him"}),
    ("clitic", {"subject": "i", "verb": "see", "object": "her", "negative": True}),
)
"""Sentences the chapter translates, always in the corpus (present tense, statements unless said)."""


# --- the corpus ------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """The generated corpus: ``train``, ``valid`` and ``test`` lists of ``Pair``; ``held_out_valid`` and
    ``held_out_test``: the (noun, adjective) combinations that only those splits contain."""

    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]
    held_out_valid: frozenset[tuple[str, str]]
    held_out_test: frozenset[tuple[str, str]]
    seed: int

    def __len__(self) -> int:
        return len(self.train) + len(self.valid) + len(self.test)

    def __repr__(self) -> str:
        return (f"Corpus(train={len(self.train)}, valid={len(self.valid)}, test={len(self.test)}, "
                f"held-out combinations: {len(self.held_out_valid)} valid, {len(self.held_out_test)} test, "
                f"seed={self.seed})")

    def splits(self) -> dict[str, list[Pair]]:
        return {"train": self.train, "valid": self.valid, "test": self.test}


def compatible_combos() -> list[tuple[str, str]]:
    """Every (noun, adjective) combination the grammar can produce, in lexicon order."""
    return [(n.en, a.en) for n in NOUNS for a in ADJECTIVES if _suits(n, a)]


def _hold_out(rng: random.Random, fraction: float) -> tuple[set, set]:
    """Pick held-out combinations so that every noun and adjective keeps at least 2 combinations in
    training; split them half/half between valid and test."""
    combos = compatible_combos()
    rng.shuffle(combos)
    left_noun = collections.Counter(n for n, _ in combos)
    left_adj = collections.Counter(a for _, a in combos)
    held = []
    for noun, adj in combos:
        if len(held) >= fraction * len(combos):
            break
        if left_noun[noun] > 2 and left_adj[adj] > 2:
            held.append((noun, adj))
            left_noun[noun] -= 1
            left_adj[adj] -= 1
    return set(held[::2]), set(held[1::2])


def generate_corpus(train: int = 30000, valid: int = 1000, test: int = 2000, seed: int = 0,
                    held_out: float = 0.1) -> Corpus:
    """Generate the corpus: ``train``, ``valid`` and ``test`` unique sentence pairs (no English sentence
    in two splits), deterministic for a ``seed``.

    A fraction ``held_out`` of the (noun, adjective) combinations is kept out of training: half for
    valid, half for test. A sentence goes to test if it contains a test combination, to valid if it
    contains a valid one, else to train; a split that is full skips its sentences. Raises
    ``RuntimeError`` if the grammar ever gives one English sentence two Spanish translations.
    """
    for name, value in (("train", train), ("valid", valid), ("test", test)):
        _checks.positive(name, value, integer=True)
    _checks.number("seed", seed, integer=True, minimum=0, strict=False)
    _checks.number("held_out", held_out, minimum=0)
    if held_out >= 0.5:
        raise ValueError(f"held_out must be a fraction below 0.5, got {held_out}")
    rng = random.Random(seed)
    held_valid, held_test = _hold_out(rng, held_out)
    grammar = _Grammar(rng)
    quota = {"train": train, "valid": valid, "test": test}
    out: dict[str, list[Pair]] = {"train": [], "valid": [], "test": []}
    seen: dict[tuple[str, ...], tuple[str, ...]] = {}
    showcase = [example(pattern, **{"tense": "present", "question": False, "negative": False, **choices})
                for pattern, choices in SHOWCASE]
    attempts, limit = 0, 60 * (train + valid + test)
    while any(len(out[s]) < quota[s] for s in out):
        attempts += 1
        if attempts > limit:
            raise RuntimeError(f"could not fill the splits after {limit} sentences: got "
                               f"{ {s: len(v) for s, v in out.items()} } (ask for fewer)")
        pair = showcase.pop(0) if showcase else grammar.sentence()
        if pair.en in seen:
            if seen[pair.en] != pair.es:
                raise RuntimeError(f"the grammar gave two translations of {pair.source!r}: "
                                   f"{' '.join(seen[pair.en])!r} and {pair.target!r}")
            continue
        seen[pair.en] = pair.es
        split = ("test" if pair.combos & held_test else "valid" if pair.combos & held_valid else "train")
        if len(out[split]) < quota[split]:
            out[split].append(pair)
    return Corpus(out["train"], out["valid"], out["test"], frozenset(held_valid), frozenset(held_test), seed)


# --- Tatoeba / Anki spa-eng ------------------------------------------------------------------------------

TATOEBA_URLS = {
    "manythings": "https://www.manythings.org/anki/spa-eng.zip",
    "tensorflow": "http://storage.googleapis.com/download.tensorflow.org/data/spa-eng.zip",
}
"""Where the file lives: manythings.org (``spa.txt`` with an attribution column, updated) and the copy
the TensorFlow tutorials use (``spa-eng/spa.txt``, two columns)."""


def parse_tatoeba(text: str) -> list[tuple[str, str]]:
    """Parse the text of ``spa.txt``: one pair a line, ``English<TAB>Spanish`` with an optional third
    column (the attribution, dropped). Blank lines are skipped; a line with fewer than two columns raises
    ``ValueError`` naming its number."""
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) < 2 or not columns[0].strip() or not columns[1].strip():
            raise ValueError(f"line {number} is not 'English<TAB>Spanish[<TAB>attribution]': {line[:80]!r}")
        pairs.append((columns[0].strip(), columns[1].strip()))
    return pairs


def load_tatoeba(path: str | os.PathLike, limit: int | None = None) -> list[tuple[str, str]]:
    """Read English–Spanish pairs from ``spa.txt`` or from a zip holding it (``spa.txt`` at the root, as
    manythings.org ships it next to ``_about.txt``, or ``spa-eng/spa.txt``, TensorFlow's copy).

    Returns a list of (english, spanish) strings, the first ``limit`` if given.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no Tatoeba file at {path}; download it with download_tatoeba()")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "spa.txt"]
            if not names:
                raise ValueError(f"{path} is a zip without spa.txt (it holds {archive.namelist()[:5]})")
            raw = archive.read(min(names, key=len))
    else:
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text: {err}") from None
    pairs = parse_tatoeba(text)
    if limit is not None:
        pairs = pairs[:_checks.positive("limit", limit, integer=True)]
    return pairs


def default_cache_dir() -> pathlib.Path:
    """``$ATTN_COURSE_CACHE``, else ``~/.cache/attn_course``."""
    return pathlib.Path(os.environ.get("ATTN_COURSE_CACHE", pathlib.Path.home() / ".cache" / "attn_course"))


def download_tatoeba(url: str = TATOEBA_URLS["tensorflow"], cache_dir: str | os.PathLike | None = None,
                     filename: str | None = None, timeout: float = 60.0) -> pathlib.Path:
    """Download the ``spa-eng`` zip once and return its path in ``cache_dir`` (default
    ``default_cache_dir()``); a file already there is used as it is, with no network access.

    Only runs when called (the course never downloads by default). The download goes to a temporary file
    that is renamed when complete, so an interrupted download leaves no broken cache behind.
    """
    cache = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / (filename or url.rstrip("/").rsplit("/", 1)[-1] or "spa-eng.zip")
    if target.exists():
        return target
    return download(url, target, timeout=timeout)
