"""Task metrics: classification, entity-level NER (seqeval) and the official CMRC 2018 EM/F1."""
