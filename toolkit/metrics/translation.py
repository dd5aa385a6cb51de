"""Translation metrics on detokenised text: corpus BLEU and chrF from sacrebleu (its standard 13a
tokenisation and settings, so figures compare with published ones), and the exact-match rate."""

from toolkit.data.texts import normalized


def score(hypotheses, references):
    """{"bleu", "chrf", "exact_match"} of hypothesis strings against one reference each (0..100 for
    BLEU and chrF, 0..1 for exact match, which ignores case and spacing differences)."""
    import sacrebleu

    hypotheses, references = [str(h) for h in hypotheses], [str(r) for r in references]
    if len(hypotheses) != len(references) or not references:
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    exact = sum(normalized(h) == normalized(r) for h, r in zip(hypotheses, references)) / len(references)
    return {
        "bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
        "chrf": float(sacrebleu.corpus_chrf(hypotheses, [references]).score),
        "exact_match": float(exact),
    }
