"""`cotgen distill`: logit distillation from a larger Gemma 3 teacher into a smaller student.

- `logits.py`  `cotgen distill logits`: the teacher's top-k log-probabilities for every token (vLLM or Tunix)
- `store.py`   the shard format both producers write, and the memory-mapped reader training uses
- `losses.py`  masked full-vocabulary and top-k KL, blended with the SFT cross entropy (pure JAX)
- `trainer.py` the Tunix adapter: logit strategies and a DistillationTrainer that keeps packed batches whole
- `run.py`     `cotgen distill train`: online or offline KD on `cotgen train`'s data, schedule and checkpoints
- `vocab.py`   the vocabulary guard (one tokenizer; 262,208 -> 262,144 rows)
- `student.py` a smaller student: the first N layers of a HF Gemma 3 folder
"""
