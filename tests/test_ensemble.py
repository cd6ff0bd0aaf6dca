"""Ensembles through evaluate.py and predict.py (--run_dir A B ...), and the decoding rules from the command line."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import run_main
from test_pipeline import read_json


@pytest.fixture
def two_copies(trained_run, tmp_path):
    copies = [str(tmp_path / name) for name in ("a", "b")]
    for copy in copies:
        shutil.copytree(trained_run.run_dir, copy)
    return copies


@pytest.fixture
def two_members(two_copies):
    """The tiny run and a copy whose decoder weights are moved by noise: two members that disagree, so a
    wrong mean gives other captions and log-probabilities than the right one."""
    import keras

    path = os.path.join(two_copies[1], "model.keras")
    model = keras.models.load_model(path, compile=False)
    rng = np.random.default_rng(4)
    model.set_weights([weight + rng.normal(scale=0.5, size=weight.shape).astype(weight.dtype)
                       for weight in model.get_weights()])
    model.save(path)
    return two_copies


class ByHand:
    """The ensemble's next-word distributions computed from the members' full models, one caption at a time."""

    def __init__(self, run_dirs):
        import keras

        from inputs.feature_store import open_features
        from inputs.run_folder import load_run

        self.models = [keras.models.load_model(os.path.join(run, "model.keras"), compile=False) for run in run_dirs]
        self.metadata, _, self.vocabulary = load_run(run_dirs[0])
        self.features, self.rows = open_features(run_dirs[0], self.metadata)

    def policy(self, name, tokens, mean):
        """(steps, vocabulary): after <start> + tokens[:-1], each step's mean of the members, renormalised
        over the words decoding may write there (no <pad>, <start>, <unk>; no <end> first)."""
        from inputs.vocabulary import END_ID, PAD_ID, START_ID, UNK_ID

        features = np.asarray(self.features[[self.rows[name]]], np.float32)
        inputs = np.array([[START_ID, *tokens[:-1]]], np.int32)
        members = np.stack([model([features, inputs], training=False).numpy()[0] for model in self.models])
        if mean == "arithmetic":
            combined = members.mean(axis=0)
        else:
            combined = np.exp(np.log(np.maximum(members, 1e-30)).mean(axis=0))
        combined[:, [PAD_ID, START_ID, UNK_ID]] = 0.0
        combined[0, END_ID] = 0.0
        return combined / combined.sum(axis=1, keepdims=True)

    def log_probability(self, name, caption, mean):
        from inputs.vocabulary import END_ID

        tokens = [self.vocabulary.ids[word] for word in caption.split()]
        # A caption is at most max_caption_length + 1 tokens, <end> included: a longer one was cut there.
        tokens += [END_ID] if len(tokens) <= self.metadata["max_caption_length"] else []
        policy = self.policy(name, tokens, mean)
        return float(np.log(policy[np.arange(len(tokens)), tokens]).sum())

    def greedy(self, name, mean):
        from inputs.vocabulary import END_ID

        tokens = []
        while len(tokens) <= self.metadata["max_caption_length"] and END_ID not in tokens:
            tokens.append(int(np.argmax(self.policy(name, tokens + [0], mean)[-1])))
        return self.vocabulary.decode(tokens)


@pytest.mark.slow
def test_an_ensemble_decodes_from_the_mean_of_its_members_distributions(trained_run, two_members, capsys):
    import evaluate
    import predict

    first, second = two_members
    by_hand = ByHand(two_members)
    arguments = ["--run_dir", first, second, "--data_dir", trained_run.data_dir, "--split", "dev", "--beam_size", "1",
                 "--guide", "none"]
    # In this process (the scripts' main, without a new TensorFlow start-up per call).
    generated = {}
    for mean, suffix in (("geometric", ""), ("arithmetic", "_arithmetic")):
        assert evaluate.main([*arguments, "--ensemble_mean", mean]) == 0
        written = read_json(first, f"evaluation_dev_ensemble2{suffix}.json")
        assert written["ensemble"] == [first, second] and written["decoding"].endswith(f"{mean} mean")
        generated[mean] = {name: entry["generated"] for name, entry in written["captions"].items()}
        assert generated[mean] == {name: by_hand.greedy(name, mean) for name in generated[mean]}
    assert "ensemble of 2 merge decoders" in capsys.readouterr().out

    name = sorted(generated["geometric"])[0]
    image = os.path.join(trained_run.data_dir, "Flicker8k_Dataset", name)
    output = os.path.join(first, "pair.json")
    for mean in ("geometric", "arithmetic"):
        assert predict.main(["--run_dir", first, second, "--image_path", image, "--beam_size", "3", "--top", "3",
                             "--guide", "none", "--ensemble_mean", mean, "--output", output]) == 0
        with open(output, encoding="utf-8") as handle:
            written = json.load(handle)
        assert written["run_dir"] == [first, second]
        beams = next(iter(written["captions"].values()))
        assert len(beams) == 3
        for beam in beams:
            # predict encodes the image afresh; the stored features agree with it to float precision.
            assert beam["log_probability"] == pytest.approx(by_hand.log_probability(name, beam["caption"], mean),
                                                            abs=1e-3)
        # The means differ here, so the checks above tell a wrong mean from the right one.
        other = "arithmetic" if mean == "geometric" else "geometric"
        assert abs(by_hand.log_probability(name, beams[0]["caption"], other) - beams[0]["log_probability"]) > 0.05
    with pytest.raises(ValueError, match="not an ensemble's"):
        predict.main(["--run_dir", first, second, "--image_path", image, "--attention_map", "x.png"])


@pytest.mark.parametrize("change", ["vocabulary", "encoder"])
def test_runs_that_do_not_match_are_refused_with_one_line(trained_run, two_copies, change, tmp_path):
    first, second = two_copies
    if change == "vocabulary":
        path = os.path.join(second, "vocabulary.json")
        tokens = read_json(path)["tokens"]
        tokens[4], tokens[5] = tokens[5], tokens[4]
        expected = f"error: ensemble: {second} and {first} have different vocabularies"
    else:
        path = os.path.join(second, "metadata.json")
        metadata = read_json(path)
        tokens = None
        metadata["encoder"] = "vgg16"
        expected = f"error: ensemble: {second} has encoder vgg16, {first} has mobilenet_v2"
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"tokens": tokens} if tokens else metadata, handle)
    missing_image = str(tmp_path / "not_there.jpg")  # not read: the runs are checked first
    result = run_main("predict.py", "--run_dir", first, second, "--image_path", missing_image)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected)


def test_decoding_rules_and_caption_statistics_from_the_command_line(trained_run, capsys):
    import evaluate

    arguments = ["--run_dir", trained_run.run_dir, "--data_dir", trained_run.data_dir, "--split", "dev",
                 "--beam_size", "1"]
    assert evaluate.main(arguments) == 0
    assert evaluate.main([*arguments, "--no_repeat_ngram_size", "2", "--block_bad_endings"]) == 0
    assert "no repeated 2-grams, no bad endings" in capsys.readouterr().out
    result = read_json(trained_run.run_dir, "evaluation_dev_norepeat2_noendings.json")
    statistics = result["caption_statistics"]
    captions = [entry["generated"] for entry in result["captions"].values()]
    assert statistics["distinct"] == len(set(captions))
    assert statistics["unknown_word"] == 0 and statistics["repeated_phrase"] == 0
    for caption in captions:
        words = caption.split()
        assert len(set(zip(words, words[1:]))) == len(words) - 1
    bad = run_main("evaluate.py", *arguments, "--no_repeat_ngram_size", "-1")
    assert bad.returncode == 2 and "--no_repeat_ngram_size must be 0" in bad.stderr


@pytest.mark.slow
def test_a_package_of_several_runs_captions_as_their_ensemble_and_repackaging_replaces_it(two_members, tmp_path,
                                                                                           capsys):
    import keras

    import predict
    from serving.captioner import Captioner
    from serving.loading import load_decoder

    first, second = two_members
    folder = str(tmp_path / "package")
    result = run_main("package.py", "--run_dir", first, second, "--package_dir", folder)
    assert result.returncode == 0, result.stderr
    assert "2 decoders" in result.stdout
    metadata = read_json(folder, "metadata.json")
    assert metadata["decoders"] == ["model.keras", "model_2.keras"]
    assert [metadata["source_run"]["run_dir"], *(run["run_dir"] for run in metadata["more_source_runs"])] == ["a", "b"]
    stored = [load_decoder(os.path.join(folder, name)) for name in metadata["decoders"]]
    for packaged, member in zip(stored, two_members):
        original = load_decoder(os.path.join(member, "model.keras"))
        for widened, full in zip(packaged.get_weights(), original.get_weights()):
            np.testing.assert_allclose(widened, full, rtol=1e-3, atol=1e-3)  # at most float16's rounding

    # The package captions with both decoders, by the geometric mean, with no --run_dir for the second.
    by_hand = ByHand(two_members)
    by_hand.models = stored
    name = sorted(read_json(first, "captions.json")["dev"])[0]
    image = os.path.join(read_json(first, "metadata.json")["image_dir"], name)
    output = str(tmp_path / "captions.json")
    assert predict.main(["--run_dir", folder, "--image_path", image, "--beam_size", "3", "--top", "3",
                         "--guide", "none", "--output", output]) == 0
    assert "ensemble of 2 merge decoders" in capsys.readouterr().err
    beams = next(iter(read_json(output)["captions"].values()))
    for beam in beams:
        assert beam["log_probability"] == pytest.approx(by_hand.log_probability(name, beam["caption"], "geometric"),
                                                        abs=1e-3)

    # The encoder check's recorded captions are the ensemble's: predict.py's greedy caption of each photo.
    for photo, recorded in zip(metadata["encoder_check"]["images"], metadata["encoder_check"]["greedy_captions"]):
        assert predict.main(["--run_dir", folder, "--image_path", os.path.join(folder, "encoder_check", photo),
                             "--guide", "none", "--output", output]) == 0
        assert next(iter(read_json(output)["captions"].values())) == recorded
    assert {str(weights.dtype) for name in metadata["decoders"] for weights in
            keras.models.load_model(os.path.join(folder, name), compile=False).weights} == \
        {metadata["weights_precision"]}

    # A package of several cannot be packed again, nor be its own package folder.
    for members in ([first, folder], [first, second, folder]):
        result = run_main("package.py", "--run_dir", *members, "--package_dir", str(tmp_path / "other"))
        assert result.returncode == 2 and result.stderr.strip().splitlines() == \
            [f"error: {folder} is already a package of several decoders: name the runs it came from"]
    result = run_main("package.py", "--run_dir", first, second, "--package_dir", second)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == \
        f"error: {second} is also --package_dir: write the package into another folder"

    # Packaging one run into the same folder leaves a package of one decoder: no stale second decoder,
    # and no scores of the ensemble that was there.
    open(os.path.join(folder, "evaluation_dev_beam3_ensemble2.json"), "w").close()
    result = run_main("package.py", "--run_dir", first, "--package_dir", folder)
    assert result.returncode == 0, result.stderr
    assert "evaluation_dev_beam3_ensemble2.json, model_2.keras" in result.stdout
    assert not {"model_2.keras", "evaluation_dev_beam3_ensemble2.json"} & set(os.listdir(folder))
    assert "decoders" not in read_json(folder, "metadata.json")
    assert len(Captioner(folder).models) == 1


def test_a_package_missing_one_of_its_decoders_is_one_clear_line(two_members, tmp_path):
    folder = str(tmp_path / "package")
    assert run_main("package.py", "--run_dir", *two_members, "--package_dir", folder).returncode == 0
    photo = str(tmp_path / "photo.jpg")  # never read: the package is checked first
    for name in ("model_2.keras", "model.keras"):
        os.rename(os.path.join(folder, name), os.path.join(folder, name + ".away"))
        result = run_main("predict.py", "--run_dir", folder, "--image_path", photo)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == \
            [f"error: {folder}: no {name}; the package is incomplete: copy it whole"]
        os.rename(os.path.join(folder, name + ".away"), os.path.join(folder, name))
    path = os.path.join(folder, "metadata.json")
    metadata = read_json(path)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({**metadata, "decoders": "model.keras"}, handle)
    result = run_main("predict.py", "--run_dir", folder, "--image_path", photo)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == \
        [f"error: {path}: 'decoders' must list model.keras, model_2.keras, ... in order, got 'model.keras'; "
         f"the package is damaged: copy or package it again"]


def test_a_package_packed_with_a_run_keeps_the_record_of_where_it_came_from(trained_run, tiny_package, tmp_path):
    folder = str(tmp_path / "package")
    result = run_main("package.py", "--run_dir", trained_run.run_dir, tiny_package, "--package_dir", folder)
    assert result.returncode == 0, result.stderr
    metadata = read_json(folder, "metadata.json")
    assert metadata["decoders"] == ["model.keras", "model_2.keras"]
    assert metadata["more_source_runs"] == [read_json(tiny_package, "metadata.json")["source_run"]]
    assert metadata["more_source_runs"][0]["settings"]  # the training commands, not an empty record
    # A package cannot come first: it has no stored dev features to score the package on.
    result = run_main("package.py", "--run_dir", tiny_package, trained_run.run_dir, "--package_dir", folder)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tiny_package}: not a run folder (no captions.json): a "
                                                  f"package is scored on the dev features of its first --run_dir; "
                                                  f"name a run first (a package may follow it)"]
