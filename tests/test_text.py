"""Natural order and the closest known name, as every command words them."""

from digitlab.utils.text import closest, did_you_mean, natural_key


def test_natural_order_compares_numbers_as_numbers_and_ignores_case():
    names = ["version_10", "version_2", "Version_3", "10.png", "2.png", "b", "A", "x²"]
    assert sorted(names, key=natural_key) == ["2.png", "10.png", "A", "b", "version_2", "Version_3", "version_10",
                                              "x²"]


def test_closest_names_a_near_candidate_or_none():
    assert closest("fti", ["fit", "test", "predict"]) == "fit"
    assert closest("zzz", ["fit", "test"]) is None
    assert closest("lenet", ["lenet5", "mlp"], cutoff=0.5) == "lenet5"


def test_closest_compares_a_dotted_key_by_its_last_part_within_its_section():
    keys = ["trainer.max_epochs", "trainer.min_epochs", "model.init_args.learning_rate_warmup_steps"]
    assert closest("trainer.max_epoch", keys) == "trainer.max_epochs"
    assert closest("model.init_args.learning_rate_warmup_step", keys) == "model.init_args.learning_rate_warmup_steps"


def test_did_you_mean_follows_a_sentence_or_says_nothing():
    assert did_you_mean("fit") == " Did you mean 'fit'?"
    assert did_you_mean(None) == ""


def test_an_abbreviation_suggests_the_one_name_it_begins():
    names = ["trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "model.init_args.lr"]
    assert closest("trainer.max_ep", names) == "trainer.max_epochs"
    assert closest("model.init_args.l", names) == "model.init_args.lr"
