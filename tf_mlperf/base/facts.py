"""The MLPerf facts the trainers, the data-prep jobs, inference and the scorer share (training rules v4.0 ResNet /
v5.0 BERT, and the data sets): nothing else writes these numbers. A benchmark's hyperparameters are not facts:
they are the fields of its config dataclass (tf_mlperf/core/settings.py)."""

RESNET_TARGET_ACCURACY = 0.759        # top-1 on the 50,000 ImageNet validation images
BERT_TARGET_MLM_ACCURACY = 0.720      # masked-LM accuracy on the eval set
BERT_EVAL_EXAMPLES = 10_000           # the rules' BERT eval set (records of eval_10k)
BERT_MAX_SEQ_LENGTH = 512             # the reference's pretraining records (create_pretraining_data.py)
BERT_MAX_PREDICTIONS_PER_SEQ = 76     # masked positions per sequence in those records
IMAGENET_NUM_IMAGES = {"train": 1_281_167, "validation": 50_000}   # ImageNet 2012 (ILSVRC2012)
IMAGENET_NUM_FILES = {"train": 1024, "validation": 128}            # its standard TFRecord sharding
