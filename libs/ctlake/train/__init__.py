"""Training and tracking: gold.nodule_patches -> torch 3-D CNNs (Horovod) -> MLflow -> gold.predictions.

Modules (pure torch/numpy unless noted):
    metrics      AUC, sensitivity, specificity, PPV, NPV, F1, balanced accuracy; patient-bootstrap CIs (numpy)
    models       candidate / malignancy / hybrid networks, He init, batch-norm synchronised over workers
    transforms   int16 patch decoding, HU normalisation, augmentation with per-sample randomness
    loop         the training loop (one process or Horovod workers: same global batches, same result)
    synthetic    synthetic gold.nodule_patches rows + radiomics features with a known answer (numpy)
    plots        training curves, ROC, confusion matrix (matplotlib)
    data         Spark glue: pinned Delta snapshot -> petastorm converter or in-memory arrays
    worker       what each Horovod worker runs
    distributed  horovod.spark.run / horovodrun launchers
    pipeline     train -> evaluate -> register -> predict (Spark, MLflow)
The CLI: ``ctlake train | evaluate | register | predict`` (ctlake.commands.train); jobs/train.py,
jobs/evaluate.py, jobs/predict.py for spark-submit.
"""
