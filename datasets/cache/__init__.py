"""The image cache: every image decoded, cropped and resized once into one uint8 array on disk
(``images``: opening, keying and validating it; ``build``: writing it in parallel, safely
against kills and concurrent builds), and optionally a copy of it on the training device
(``device``) so that batches are indexed there instead of loaded by workers."""
