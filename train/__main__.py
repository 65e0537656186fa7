from .lifeline import die_with_parent, under_torchrun

if under_torchrun():  # first, before the slow imports: a rank must not outlive its launcher
    die_with_parent()

from .args import parse_args  # noqa: E402

args = parse_args()  # --help and bad flags answer before torch and open_clip are imported

from .main import run_parsed  # noqa: E402

raise SystemExit(run_parsed(args))
