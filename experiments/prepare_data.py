"""Writes the shipped SICK and TREC data as JSONL files that configs read directly.

    python experiments/prepare_data.py      # rewrites experiments/data/{sick,trec}/*.jsonl (committed)

SICK (experiments/data/sick/SICK.txt) -> sick/{train,dev,test}.jsonl by its SemEval split (TRAIN, TRIAL,
TEST), columns sentence1, sentence2, score (relatedness / 5, in [0.2, 1]) and label (ENTAILMENT /
NEUTRAL / CONTRADICTION): `columns:` in a config picks score pairs or pairs + class, and `convert:`
derives anchor-positive pairs or triplets. TREC (experiments/data/trec) -> trec/{train,test}.jsonl,
columns text and label (the coarse class: ABBR, DESC, ENTY, HUM, LOC, NUM).
"""

import csv
import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
SICK_SPLITS = {"TRAIN": "train", "TRIAL": "dev", "TEST": "test"}
TREC_FILES = {"train_5500.label": "train", "TREC_10.label": "test"}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{path.relative_to(DATA.parent.parent)}: {len(rows)} rows")


with open(DATA / "sick" / "SICK.txt", newline="") as file:
    sick = list(csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE))
for split, name in SICK_SPLITS.items():
    rows = [
        {"sentence1": row["sentence_A"], "sentence2": row["sentence_B"], "score": float(row["relatedness_score"]) / 5, "label": row["entailment_label"]}
        for row in sick
        if row["SemEval_set"].strip() == split
    ]
    write_jsonl(DATA / "sick" / f"{name}.jsonl", rows)

for file_name, name in TREC_FILES.items():
    rows = []
    for line in (DATA / "trec" / file_name).read_text(encoding="latin-1").splitlines():
        label, _, question = line.partition(" ")
        rows.append({"text": question.strip(), "label": label.split(":")[0]})
    write_jsonl(DATA / "trec" / f"{name}.jsonl", rows)
