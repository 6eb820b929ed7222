"""Writes tiny-train-v1.1.json and tiny-dev-v1.1.json (SQuAD v1.1 format) from tests/data/wikipedia_extracted.

Each context is one whole paragraph (one line) of the MLPerf WikiExtractor sample, found by file, line number
and its first words (checked). The questions and answers below were written by hand; an answer is given as its
text and which occurrence of that text in the context it is (0: the first), and `answer_start` is that
occurrence's character offset. The train file keeps each question's first answer only (training needs exactly
one); the dev file keeps all of them (the dev set's several annotators).

    python tests/data/squad/build_tiny_squad.py           # checks that the JSON files are what this writes
    python tests/data/squad/build_tiny_squad.py --write   # rewrites them
"""
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
WIKI = HERE.parent / "wikipedia_extracted"

# (file, line, first words, title, [(id, question, [(answer, occurrence), ...]), ...])
PARAGRAPHS = [
    ("wiki_03", 2664, "In December 2017, two articles", "Apple Inc.", [
        ("apple-1", "Which two publications debated Apple's devastating week in December 2017?",
         [('"The Verge" and "ZDNet"', 0), ("The Verge", 0)]),
        ("apple-2", "What did users enter as the username to gain administrator privileges?", [("root", 0)]),
        ("apple-3", "Where was the macOS bug publicly disclosed?", [("on Twitter", 0), ("Twitter", 0)]),
        ("apple-4", "How quickly did Apple release a security fix?", [("within a day", 0)]),
        ("apple-5", "What broke for users after they installed the security patch?", [("file sharing", 0)]),
        ("apple-6", "Which High Sierra version brought the root vulnerability back after the update?",
         [("10.13.0", 0)]),
        ("apple-7", "When did iOS devices with local app notifications start to restart repeatedly?",
         [("12:15am on December 2, 2017", 0)]),
        ("apple-8", "Where was it nighttime when Apple released the iOS update?",
         [("Cupertino, California", 0), ("Cupertino", 0)]),
        ("apple-9", "Who called the week a nightmare for Apple's software engineers?", [("Tom Warren", 0)]),
        ("apple-10", "How many devices does Apple have to protect?", [("more than 1 billion", 0)]),
        ("apple-11", "Which ZDNet writer felt that Apple is slipping?", [("Adrian Kingsley-Hughes", 0)]),
        ("apple-12", "Under whose watch did product launches feel tighter?", [("Steve Jobs", 0), ("Jobs", 1)]),
        ("apple-13", "What would have rolled under Jobs, according to Kingsley-Hughes?", [("heads", 0)]),
        ("apple-14", "What did Apple issue along with the security fix?", [("an apology", 0), ("apology", 0)]),
        ("apple-15", "On which platform did a date bug make devices restart?", [("iOS", 1)]),
        ("apple-16", "What did The Verge's Tom Warren call the week for Apple's software engineers?",
         [('a "nightmare"', 0), ("nightmare", 0)]),
    ]),
    ("wiki_02", 3771, 'The type genus, "Asparagus"', "Asparagales", [
        ("asparagales-1", "Who described the type genus Asparagus?", [("Carl Linnaeus", 0)]),
        ("asparagales-2", "In which year was Asparagus described?", [("1753", 0)]),
        ("asparagales-3", "Who first described the family Liliaceae?", [("Michel Adanson", 0)]),
        ("asparagales-10", "Which of Adanson's sections held Asparagus and three other genera?",
         [("Asparagi", 0), ("the Asparagi", 0)]),
        ("asparagales-11", "Under which family name are the Asphodeli known today?", [("Asphodelaceae", 0)]),
        ("asparagales-4", "How many sections did Adanson create within Liliaceae?", [("eight", 0)]),
        ("asparagales-5", "Who is credited with organising genera into families?",
         [("Antoine Laurent de Jussieu", 0)]),
        ("asparagales-6", "What were Jussieu's Asparagi called in the French literature?",
         [("Asparagacées", 0), ('"Asparagacées"', 0)]),
        ("asparagales-7", "Who renamed the Narcissi as the Amaryllidées in 1805?",
         [("Jean Henri Jaume Saint-Hilaire", 0)]),
        ("asparagales-8", "Which genus became the type of Amaryllidaceae instead of Narcissus?", [("Amaryllis", 0)]),
        ("asparagales-9", "In which year did de Candolle describe two separate families?", [("1813", 0)]),
    ]),
    ("wiki_00", 699, "Another etymology relates the name", "Achilles", [
        ("achilles-1", "What does the Proto-Indo-European compound behind the name mean?", [("sharp foot", 0)]),
        ("achilles-2", "Which Latin word would the whole expression be comparable to?", [("acupedius", 0)]),
        ("achilles-3", "What does the Greek ἀκμή mean?", [("point, edge, zenith", 0)]),
        ("achilles-4", "Which Latin word means needle, pin or bodkin?", [("acus", 0)]),
        ("achilles-5", "What English word comes from acuō?", [("acute", 0)]),
        ("achilles-6", "How is πόδας ὠκὺς Ἀχιλλεύς translated?", [("quick-footed Achilles", 0)]),
    ]),
    ("wiki_03", 208, "Melih Gökçek has been", "Ankara", [
        ("ankara-1", "Who has been the Metropolitan Mayor of Ankara since 1994?", [("Melih Gökçek", 0)]),
        ("ankara-2", "Who stood as the CHP candidate against Gökçek?", [("Mansur Yavaş", 0)]),
        ("ankara-3", "By how much was Gökçek declared the winner?", [("1%", 0), ("just 1%", 0)]),
        ("ankara-4", "Where did Yavaş want to take the irregularities?", [("European Court of Human Rights", 0)]),
    ]),
    ("wiki_01", 2573, "Petalite (LiAlSiO) was discovered", "Alkali metal", [
        ("alkali-1", "Which Brazilian chemist discovered petalite?", [("José Bonifácio de Andrada", 0)]),
        ("alkali-2", "On which Swedish island was petalite found?", [("Utö", 0)]),
        ("alkali-3", "Who detected the new element in petalite ore in 1817?", [("Johan August Arfwedson", 0)]),
        ("alkali-4", "What does the Greek word lithos mean?", [("stone", 0)]),
        ("alkali-5", "Who noted the triads of elements in 1850?", [("Johann Wolfgang Döbereiner", 0)]),
    ]),
    ("wiki_01", 4143, "In the southern segment the Early Cretaceous", "Atlantic Ocean", [
        ("atlantic-1", "How many million years ago was the intensive magmatism of the Early Cretaceous?",
         [("133–130\u00a0Ma", 0), ("133–130", 0)]),
        ("atlantic-2", "Which hotspot produced the Paraná–Etendeka Large Igneous Province?", [("Tristan hotspot", 0)]),
        ("atlantic-3", "How far south do the offshore basaltic flows reach?",
         [("the Falkland Islands and South Africa", 0)]),
    ]),
    ("wiki_02", 1818, "If, however, the preceding vowel", "Allah", [
        ("allah-1", "How is the Lām in Allah when the preceding vowel is i?", [("light", 0)]),
        ("allah-2", "What is the vowel i called in Arabic?", [("كَسْرة", 0)]),
        ("allah-3", "With what should the Lām be pronounced in Bismillahi?", [("the tip of the tongue", 0)]),
    ]),
    ("wiki_01", 2910, "The Danish and Norwegian alphabets", "Alphabet", [
        ("alphabet-1", "Which letters end the Danish and Norwegian alphabets?", [('"æ"—"ø"—"å"', 0)]),
        ("alphabet-2", "Which alphabets put å, ä and ö at the end?", [("the Swedish and Finnish ones", 0)]),
    ]),
]


def nth(text: str, needle: str, occurrence: int) -> int:
    start = -1
    for _ in range(occurrence + 1):
        start = text.find(needle, start + 1)
        if start < 0:
            raise ValueError(f"{needle!r} occurs fewer than {occurrence + 1} times")
    return start


def build(keep_all_answers: bool) -> dict:
    data = []
    for name, line, first, title, qas in PARAGRAPHS:
        context = (WIKI / name).read_text(encoding="utf-8").split("\n")[line - 1]
        assert context.startswith(first), (name, line, context[:60])
        entries = []
        for qid, question, answers in qas:
            kept = answers if keep_all_answers else answers[:1]
            entries.append({"id": qid, "question": question,
                            "answers": [{"answer_start": nth(context, text, occurrence), "text": text}
                                        for text, occurrence in kept]})
        data.append({"title": title, "paragraphs": [{"context": context, "qas": entries}]})
    return {"version": "1.1", "data": data}


def main() -> int:
    ok = True
    for filename, keep_all in (("tiny-train-v1.1.json", False), ("tiny-dev-v1.1.json", True)):
        text = json.dumps(build(keep_all), ensure_ascii=False, indent=1) + "\n"
        path = HERE / filename
        if "--write" in sys.argv:
            path.write_text(text, encoding="utf-8")
        elif not path.exists() or path.read_text(encoding="utf-8") != text:
            print(f"{path}: differs from what build_tiny_squad.py writes")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
