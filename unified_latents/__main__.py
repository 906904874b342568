"""`python -m unified_latents …` is `ul_train …`; under torchrun: `torchrun --nproc_per_node=N -m unified_latents …`."""
import sys

from unified_latents.cli import train_main

sys.exit(train_main())
