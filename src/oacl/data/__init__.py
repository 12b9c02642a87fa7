"""Data: the embedded benchmark generator (:mod:`~oacl.data.benchmark`), datasets that all yield
one item format (:mod:`~oacl.data.datasets`: embedded set files, COCO, ImageFolder, Background
Challenge) and where each split lives (:mod:`~oacl.data.source`).

Nothing is imported here: a stage that imports one module of this package must not depend on
the others (``dvc.yaml`` lists exactly the files each stage imports).
"""
