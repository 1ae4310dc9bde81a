"""Adam / AdamW fine-tuning of a pretrained image classifier.

The ranges are the ones a practitioner searches with random search or Bayesian optimization:
learning rate and weight decay over several decades on a log scale, beta2 through
``one_minus_beta2`` (so 0.9 .. 0.9999 spreads evenly on a log scale), and the schedule's own
parameters only where that schedule is chosen.

The grid is deliberately small: 2 learning rates x 2 weight decays = 4 configs, every other
parameter held at a well-tried value: AdamW, betas (0.9, 0.999), batch 32, cosine decay, clipping
at norm 1, and the backbone frozen for the first epoch (a linear probe of the new head), then
trained at 0.3 x the head's learning rate. No warm-up in the grid: while the backbone is frozen
there is nothing for a warm-up to protect. Every grid config reaches >= 0.95 test accuracy on
the offline ``digits-transfer`` default within 6 epochs.
"""

from search_spaces.space import Categorical, Fixed, Float, Int, LogFloat, Space

SPACE = Space(
    name="adam_finetune",
    # Adam adds the L2 penalty to the gradient (coupled); AdamW decays weights directly
    # (decoupled, Loshchilov & Hutter), which is why the two differ even at equal settings.
    optimizer=Categorical(["adam", "adamw"], grid=["adamw"]),
    lr=LogFloat(1e-5, 1e-1, grid=[3e-3, 1e-2]),
    beta1=Float(0.8, 0.99, grid=[0.9]),
    one_minus_beta2=LogFloat(1e-4, 1e-1, grid=[1e-3]),
    eps=LogFloat(1e-10, 1e-6, grid=[1e-8]),
    weight_decay=LogFloat(1e-6, 1e-1, grid=[1e-4, 5e-2]),
    batch_size=Categorical([32, 64, 128], grid=[32]),
    warmup_epochs=Int(0, 2, grid=[0]),
    schedule=Categorical(["none", "step", "exponential", "cosine"], grid=["cosine"]),
    step_size=Int(1, 5, grid=[2], when={"schedule": ["step"]}),
    gamma_step=Float(0.1, 0.9, grid=[0.5], when={"schedule": ["step"]}),
    gamma_exp=Float(0.7, 0.99, grid=[0.9], when={"schedule": ["exponential"]}),
    clip_norm=LogFloat(0.1, 10.0, grid=[1.0]),
    freeze_epochs=Int(0, 2, grid=[1]),
    backbone_lr_mult=LogFloat(0.01, 1.0, grid=[0.3]),
    # Early stopping on validation loss; fixed so every trial of a study stops by one rule.
    patience=Fixed(3),
)
