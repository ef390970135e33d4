"""Text that spells a special token ("[SEP]", "[MASK]", "[CLS]", ...) is, at fine-tuning and prediction time, that
special token: the task inputs equal transformers' BertTokenizer's (see docs/finetune.md, "Special tokens")."""

from __future__ import annotations

import pytest

from nezha.data.tokenization import NezhaTokenizer
from nezha.tasks.classification.reader import TextExample, encode_examples
from nezha.tasks.mrc.reader import MrcExample, make_features

TEXTS = [("这家酒店[SEP]服务很好", None), ("价格[MASK]便宜", "[CLS]房间小[PAD]"), ("[sep] 和 [Mask] 只是文字", "[UNK]")]


@pytest.mark.parametrize("lower", [True, False])
def test_classification_inputs_equal_bert_tokenizer_on_literal_special_tokens(chinese_vocab, lower):
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertTokenizer(str(chinese_vocab), do_lower_case=lower)
    tok = NezhaTokenizer.from_file(chinese_vocab, do_lower_case=lower)
    examples = [TextExample(f"x:{i}", a, b, "1") for i, (a, b) in enumerate(TEXTS)]
    for enc, (a, b) in zip(encode_examples(tok, examples, 64), TEXTS):
        ref = reference(a, b)
        assert enc.input_ids == ref["input_ids"] and enc.token_type_ids == ref["token_type_ids"]
    # The typed "[SEP]" is the separator id itself (the original google/NEZHA scripts split it into "[", "sep", "]");
    # other spellings ("[sep]", "[Mask]") stay ordinary text.
    first, _, third = (e.input_ids for e in encode_examples(tok, examples, 64))
    assert first.count(tok.sep_id) == 2 and tok.mask_id not in third and tok.sep_id not in third[1:-3]


def test_mrc_answer_span_over_a_literal_special_token_maps_back_exactly(chinese_vocab):
    tok = NezhaTokenizer.from_file(chinese_vocab, do_lower_case=False)
    context = "答案是[MASK]吗"
    (feat,) = make_features(tok, [MrcExample("q", "答案", context)], max_seq_length=32)
    spans = [context[a:b] for a, b in (o for o in feat.offsets if o is not None)]
    assert spans == ["答", "案", "是", "[MASK]", "吗"] and tok.mask_id in feat.input_ids
