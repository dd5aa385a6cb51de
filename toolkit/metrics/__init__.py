"""Task metrics in plain numpy: COCO-style detection mAP (and, as tasks arrive, mIoU, BLEU, perplexity)."""
