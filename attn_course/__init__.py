"""Companion package of the course "Attention, from intuition to GPU".

One module per concept (see the book's introduction for which chapter uses which):

- ``runtime``    seeding, device and thread count for notebooks (``runtime.setup``)
- ``masking``    padding, causal and window masks (True = may attend) and a masked softmax that is safe on
                 fully-masked rows and in fp16/bf16
- ``scoring``    score functions: dot, scaled dot, general, additive (Bahdanau) and concat (Luong)
- ``attention``  the functional core: softmax with temperature, soft and hard lookup, ``attend``; hard
                 attention, Gumbel-softmax, straight-through and the REINFORCE loss
- ``local``      Luong's local-m and local-p attention, and sliding-window attention
- ``positional`` sinusoidal and learned positional encodings
- ``multihead``  ``MultiHeadAttention`` (self, cross, causal; a readable reference path and a fast SDPA path)
- ``cache``      the key/value cache for autoregressive decoding
- ``transformer`` encoder and decoder layers and stacks (post- or pre-LayerNorm)
- ``tasks``      synthetic tasks for measuring what attention buys (long-range dependencies)
- ``bench``      benchmarks that print ratios against baselines measured in the same run
- ``triton_attention`` a teaching FlashAttention-style Triton kernel (online softmax, optional sliding window)
- ``pooling``    attention pooling (Nadaraya-Watson kernel regression)
- ``seq2seq``    a small GRU encoder-decoder, with or without attention; the translation models (bi-GRU with
                 Bahdanau or Luong attention, a small Transformer)
- ``decoding``   greedy and beam search, returning the attention that emitted each token
- ``translate``  the ``Translator``: train, translate (with clear errors), evaluate, align, save and load
- ``text``       tokenising (Spanish punctuation and accents), vocabularies, padded batches and masks
- ``data``       datasets the project generates itself (nothing is downloaded by default); ``data.spanish``:
                 the English→Spanish corpus with gold word alignments, and the Tatoeba/Anki loader;
                 ``data.scenes``: scenes of real handwritten digits (scikit-learn's ``load_digits``) with
                 captions and boxes, and MNIST/``.npz`` loaders (MNIST downloads only when asked)
- ``metrics``    BLEU, chrF and exact match through sacrebleu; the alignment error rate of attention (AER)
- ``checkpoint`` save and load trained models, with clear errors for corrupt or mismatched files
- ``captioning`` "Show, Attend and Tell": a CNN grid encoder, an LSTM decoder with soft or hard (REINFORCE)
                 visual attention, greedy and beam decoding, training, and the attention hit rate
- ``viz``        heatmaps, weight plots, and attention laid over an image (``attention_overlay``)
- ``widgets``    interactive explorers (ipywidgets 7.7 and 8)
- ``exercises``  autograded exercises: ``check(exercise_id, your_function)``

Shape legend used in every docstring: B batch, H heads, Lq queries, Lk keys, D key/query size, Dv value size.
"""

__version__ = "0.1.0"
