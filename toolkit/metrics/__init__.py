"""Task metrics in plain numpy: COCO-style detection mAP (BLEU and chrF come from sacrebleu, in the tasks)."""
