"""MT-Bench first turns: placeholder metrics (no judge; see mtbench.yaml)."""


def process_results(doc, results):
    response = results[0]
    return {"generated": float(bool(response.strip())), "response_chars": float(len(response))}
