"""The study's vocabulary: the ten abilities, the out-of-domain subjects, the splits."""

ABILITIES: tuple[str, ...] = (
    "biology",
    "history",
    "code",
    "creative_writing",
    "chinese",
    "understanding",
    "role_play",
    "reasoning",
    "math",
    "ethics",
)

OOD_SUBJECTS: tuple[str, ...] = ("physician", "teacher_qualification", "urban_rural_planner")

TRAIN_SPLITS: tuple[str, ...] = ("1000", "full")
EVAL_SPLITS: tuple[str, ...] = ("valid", "test")
SOURCES: tuple[str, ...] = ("curated", "synthetic")

# Chat tokens of the study's framing: <user> text <eot> <assistant> text <eot>.
USER, ASSISTANT, EOT, PAD = "<user>", "<assistant>", "<eot>", "<pad>"
CHAT_TOKENS: tuple[str, ...] = (USER, ASSISTANT, EOT, PAD)

# The plain-text world corpus under a data root (pre-training); data.models[].pretrain.corpus defaults to it.
WORLD = "world/world.txt"
