"""Input limits and shipped defaults, the one home of each: the library's checks, the command line and the app all
read them from here. Plain values, no imports."""

from __future__ import annotations

# One inference call of the library: descent steps and best-of-N starts. Far beyond what helps any shipped model;
# they bound the time and memory a single call may take.
MAX_STEPS = 64
MAX_CANDIDATES = 64
MAX_PASSES = 8  # re-anchored descent passes (image denoising)
# `ebt-vision calibrate`: the noise levels (0-255) a blind image EBT's step schedule is fitted at; a photo takes the
# setting of the level whose estimated sigma is nearest its own. Every 5 to 30 and every 10 to 50 (chosen on the
# validation photos over the coarser 5, 10, 20, 30, 40, 55, ... that the schedule was first fitted on; see
# docs/results/thinking.md), the training range's top (55), and three levels beyond it.
CALIBRATION_SIGMAS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 55.0, 70.0, 90.0, 120.0)
# The step-size scales (times the learned step size) the calibration tries at every level with one pass.
CALIBRATION_SCALES = (0.5, 0.75, 1.0, 1.5)
# `eval` / `denoise --views`: how many mirror images of a photo an image model is averaged over (the first 1, 2, 4
# or 8 of image.tiling.view's, each set a group, so the average is symmetric).
MIRROR_VIEWS = (1, 2, 4, 8)
# `ebt-vision denoise --best-of`: every start is a full descent of a full-size photo.
MAX_FILE_CANDIDATES = 16
# The app: a click must stay interactive on a CPU.
APP_MAX_STEPS = 16
APP_MAX_BEST_OF = 8
APP_MAX_DIT_STEPS = 50  # the video tab's DDIM steps per frame
APP_MAX_NEW_TOKENS = 200
APP_MAX_SIDE = 384  # larger image uploads are downscaled (the tab says so)
APP_SIGMA_RANGE = (0.0, 100.0)
APP_STEP_SCALE_RANGE = (0.1, 4.0)

# Files a user hands in. Pixel counts (every frame counted) are read from the header, before anything is decoded.
MAX_IMAGE_PIXELS = 100_000_000  # any image the library reads (training folders): what decoding it alone may take
# `ebt-vision denoise`: the memory one run may take, and the pixels that fit in it. Measured (reports/photo_memory.md):
# 2.2 GiB + 0.29 GiB per megapixel for the EBT, so at most 20 megapixels in 8 GiB; 16 leaves a margin (6.8 GiB).
DENOISE_MEMORY_GIB = 8
MAX_FILE_PIXELS = 16_000_000
APP_MAX_PIXELS = 40_000_000  # an image upload
APP_MAX_IMAGE_BYTES = 20 * 2**20
APP_MAX_VIDEO_BYTES = 100 * 2**20
MAX_FRAME_SIDE = 4096  # a decoder told to open an 8K-plus stream could take the machine's memory first
MAX_HORIZON = 64  # predicted frames of one rollout
MAX_PROMPT_CHARS = 4000
MAX_NEW_TOKENS = 512

# What the evaluations measure when not told otherwise: Gaussian noise sigmas on the 0-255 scale (15-50 inside the
# shipped models' training range, 75 and 100 outside it).
SIGMAS = (15.0, 25.0, 50.0, 75.0, 100.0)

# The shipped models (folders in the Hugging Face layout, found from any directory by ``core.paths.resolve_path``).
IMAGE_EBT = "checkpoints/ebt-image-s"
IMAGE_DIT = "checkpoints/dit-image-s"
VIDEO_EBT = "checkpoints/video-mmnist-s"
# A real-footage video EBT (configs/video-real-cpu.yaml): what `ebt-vision predict` and the app's uploads use when it
# is shipped, else VIDEO_EBT (``video.loading.default_video_checkpoint``).
VIDEO_REAL_EBT = "checkpoints/video-real-s"
VIDEO_TRANSFORMER = "checkpoints/video-mmnist-s-transformer"
VIDEO_DIT = "checkpoints/video-mmnist-s-dit"
TEXT_EBT = "checkpoints/text-sotu-s"
TEXT_TRANSFORMER = "checkpoints/text-sotu-s-transformer"
# The configs that train them (what the app tells a user whose checkpoint is missing).
VIDEO_CONFIG = "configs/video-mmnist-cpu.yaml"
TEXT_CONFIG = "configs/text-cpu.yaml"
