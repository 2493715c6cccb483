"""MMLU-STEM CoT: the STEM subjects of lm-eval's mmlu_flan_cot_zeroshot_stem tag."""

STEM_SUBJECTS = frozenset(
    "abstract_algebra anatomy astronomy college_biology college_chemistry college_computer_science "
    "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
    "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
    "high_school_mathematics high_school_physics high_school_statistics machine_learning".split()
)


def process_docs(dataset):
    return dataset.filter(lambda doc: doc["subject"] in STEM_SUBJECTS)
