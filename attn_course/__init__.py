"""Companion package of the course "Attention, from intuition to GPU".

One module per concept (see the book's introduction for which chapter uses which):

- ``runtime``    seeding, device and thread count for notebooks (``runtime.setup``)
- ``masking``    the boolean mask convention and a masked softmax that is safe on fully-masked rows
- ``attention``  the functional core: softmax with temperature, soft and hard lookup, ``attend``
- ``pooling``    attention pooling (Nadaraya-Watson kernel regression)
- ``seq2seq``    a small GRU encoder-decoder, with or without attention
- ``data``       datasets the project generates itself (nothing is downloaded)
- ``viz``        heatmaps and weight plots
- ``widgets``    interactive explorers (ipywidgets 7.7 and 8)
- ``exercises``  autograded exercises: ``check(exercise_id, your_function)``

Shape legend used in every docstring: B batch, H heads, Lq queries, Lk keys, D key/query size, Dv value size.
"""

__version__ = "0.1.0"
