#!/usr/bin/env python3
"""Writes a deterministic multilingual text for the tokenizer benchmark (bench/tokenizer_speed.sh).

Words are drawn from the letters of twelve scripts (Latin with diacritics, some in
decomposed form, Cyrillic, Greek, Arabic, Hebrew, Devanagari, Thai, CJK, Hiragana,
Katakana, Hangul), with numbers, punctuation, emoji and line breaks between them: every
code path of both tokenizer families (NFC, \\p{L}/\\p{N} classes, byte fallback, byte-level
pieces of multi-byte characters) runs, and no word repeats often enough to favour a cache.
usage: make_multilingual_text.py OUT [MEGABYTES]
"""
import random
import sys

SCRIPTS = {
    "latin": "abcdefghijklmnopqrstuvwxyzàáâäçèéêëìíîïñòóôöùúûüßøåæœ",
    "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
    "greek": "αβγδεζηθικλμνξοπρστυφχψωάέήίόύώ",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "hebrew": "אבגדהוזחטיכלמנסעפצקרשת",
    "devanagari": "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह" + "ािीुूेैोौं्",
    "thai": "กขคฆงจฉชซญฎฏฐฑฒณดตถทธนบปผพฟภมยรลวศษสหฬอฮะาิีึืุูเแโใไ",
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴",
    "hiragana": "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん",
    "katakana": "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲン",
    "hangul": "가나다라마바사아자차카타파하거너더러머버서어저처커터퍼허고노도로모보소오조초코토포호구누두루무부수우주추쿠투푸후",
}
DECOMPOSED = ["e\u0301", "a\u0300", "o\u0308", "u\u0302", "n\u0303", "c\u0327"]
PUNCT = [", ", ". ", "! ", "? ", "; ", ": ", " - ", " (", ") ", "\u201c", "\u201d", "\u3001", "\u3002", "\u060c "]
EMOJI = ["\U0001F600", "\U0001F389", "\U0001F44D\U0001F3FD", "\u2728", "\U0001F1EB\U0001F1F7"]


def word(rng, letters):
    n = rng.choice([1, 2, 2, 3, 3, 4, 4, 5, 6, 7, 8, 10])
    w = "".join(rng.choice(letters) for _ in range(n))
    if letters is SCRIPTS["latin"] and rng.random() < 0.15:
        w += rng.choice(DECOMPOSED)
    return w


def main():
    out = sys.argv[1]
    megabytes = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    rng = random.Random(20261201)
    names = list(SCRIPTS)
    parts, size = [], 0
    while size < megabytes * 1e6:
        letters = SCRIPTS[rng.choice(names)]
        sentence = []
        for _ in range(rng.randint(4, 14)):
            r = rng.random()
            if r < 0.08:
                sentence.append(str(rng.randint(0, 10 ** rng.randint(1, 7))))
            elif r < 0.11:
                sentence.append(rng.choice(EMOJI))
            else:
                sentence.append(word(rng, letters))
        no_spaces = letters in (SCRIPTS["cjk"], SCRIPTS["hiragana"], SCRIPTS["katakana"], SCRIPTS["thai"])
        text = ("" if no_spaces else " ").join(sentence) + rng.choice(PUNCT)
        if rng.random() < 0.2:
            text += "\n"
        parts.append(text)
        size += len(text.encode("utf-8"))
    with open(out, "w", encoding="utf-8") as f:
        f.write("".join(parts))


if __name__ == "__main__":
    main()
