"""Small GPTs: config, a TransformerLens-hooked model, generation, next-token loss, training."""

from superpose.gpt.bridge import from_transformer_bridge, to_transformer_bridge
from superpose.gpt.config import GPTConfig
from superpose.gpt.convert import from_hooked_transformer, to_hooked_transformer
from superpose.gpt.corpus import Corpus, TokenDataset, load_corpus, load_text_files
from superpose.gpt.heads import (
    attention_patterns,
    induction_scores,
    induction_scores_from,
    prev_token_scores,
    prev_token_scores_from,
)
from superpose.gpt.model import GPT, next_token_loss, per_token_loss
from superpose.gpt.synthetic import Dyck, DyckScore, repeated_tokens
from superpose.gpt.tokenizers import (
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
)
from superpose.gpt.training import GPTTrainConfig, GPTTrainResult, TrainHistory, evaluate, train
from superpose.train.checkpoint import latest_checkpoint

__all__ = ["GPT", "GPTConfig", "next_token_loss", "per_token_loss", "to_hooked_transformer",
           "from_hooked_transformer", "to_transformer_bridge", "from_transformer_bridge",
           "GPTTrainConfig", "GPTTrainResult", "TrainHistory", "evaluate", "latest_checkpoint",
           "train", "BPETokenizer", "ByteTokenizer", "CharTokenizer", "Tokenizer",
           "load_tokenizer", "Corpus", "TokenDataset", "load_corpus", "load_text_files", "Dyck",
           "DyckScore", "repeated_tokens", "attention_patterns", "induction_scores",
           "induction_scores_from", "prev_token_scores", "prev_token_scores_from"]
