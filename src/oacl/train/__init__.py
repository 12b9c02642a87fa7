"""Training: the engine shared by pretraining and debiased retraining, monitors, the pretrain stage's logic."""
