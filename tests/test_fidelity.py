"""Paper or released code: every switch, with worked examples computed by hand from the released
code's formula (in the comments), and the ``fidelity`` preset that sets them all through
train.py's Hydra config."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

import envs
import train
from agents.trajectory import GameResult, TurnRecord
from games.qa_duel import QADuelConfig, QADuelGame
from games.spy import SpyConfig, SpyGame
from tests.test_qa_duel import QUESTION
from trainers.advantages import GroupNormalization, RoleBaselines, group_normalize
from trainers.config_checks import ConfigError, check_fidelity, check_train_config
from trainers.recipes import make_recipe
from trainers.selfplay_config import SelfPlayConfig

RELEASED_SPY = {"decision": "observer", "observer_samples": 8, "decision_reward": "shaped",
                "invalid_clue_penalty": 0.0}
REASONED = "Player 3's clue does not fit the picture. "  # the shaped reward's format needs > 10


def spy_game(source, observer_votes: list[str], **options) -> SpyGame:
    """A finished spy game whose spy is player 3: every clue valid, then the observer's votes."""
    config = SpyConfig(**(RELEASED_SPY | {"observer_samples": len(observer_votes)} | options))
    game = next(g for seed in range(100) if (g := SpyGame(config, source,
                                                          np.random.default_rng(seed),
                                                          f"g{seed}")).spies == {3})
    while game.pending()[0].phase == "clue":
        game.play(game.pending()[0].index, "I look. \\boxed{There is a cube.}")
    for turn, vote in zip(game.pending(), observer_votes, strict=True):
        game.play(turn.index, vote)
    assert game.done
    return game


def result(game: SpyGame | QADuelGame) -> GameResult:
    """The game's turns as the rollout runner records them."""
    turns = [TurnRecord(game_id=game.game_id, env=game.name, turn=m.turn.index, seat=m.turn.seat,
                        role=m.turn.role, phase=m.turn.phase, round=m.turn.round, agent="script",
                        prompt=m.turn.prompt, images=[], text=m.text, prompt_ids=[1],
                        completion_ids=[2], logprobs=[-1.0], reward=m.reward, valid=m.valid)
             for m in game.moves]
    return GameResult(game.game_id, game.name, dict(game.roles), game.seat_rewards(),
                      game.stats(), turns)


def by_seat(rows) -> dict[str, list[float]]:
    advantages: dict[str, list[float]] = {}
    for row in rows:
        advantages.setdefault(row.turn.seat, []).append(row.advantage)
    return advantages


# ----- Vision-Zero: role baselines -----

def test_role_baselines_released_order_subtracts_the_updated_baseline(solid_source):
    """The released code's worked example: spy P3, six observer votes for P3, one for P1, one N/A:
    v_s = 6, mean civilian votes 1/3, so r_spy = -0.1 (6 - 1/3) = -17/30, r_P1 = (0.1/3)(17/3) -
    0.1 (1 - 1/3) = 11/90, r_P2 = r_P4 = 17/90 + 0.1/3 = 20/90 (rewards on both clue turns)."""
    votes = [REASONED + "\\boxed{3}"] * 6 + [REASONED + "\\boxed{1}", REASONED + "\\boxed{N/A}"]
    game = result(spy_game(solid_source, votes))
    released = make_recipe("spy", SelfPlayConfig(baseline_decay=0.9,
                                                 baseline_order="update_then_subtract"))
    paper = make_recipe("spy", SelfPlayConfig(baseline_decay=0.9))
    # round 1, released: b_spy = 0.9·0 + 0.1·(-17/30) = -17/300, A_spy = -17/30 + 17/300 = -0.51;
    # b_civ = 0.1·mean(11/90, 20/90, 20/90) = 0.1·51/270 = 51/2700,
    # A_P1 = 11/90 - 51/2700 = 279/2700 = 0.10333, A_P2 = A_P4 = 549/2700 = 0.20333
    first = by_seat(released.rows([game])["clue"])
    assert first["player_3"] == pytest.approx([-0.51, -0.51])
    assert first["player_1"] == pytest.approx([279 / 2700] * 2)
    assert first["player_2"] == first["player_4"] == pytest.approx([549 / 2700] * 2)
    # the paper (SPIRAL) subtracts the baseline before the update: 0 on the first round
    assert by_seat(paper.rows([game])["clue"])["player_3"] == pytest.approx([-17 / 30] * 2)
    assert released.baselines.values == pytest.approx(paper.baselines.values)  # same EMA
    # round 2, released: b_spy = 0.9·(-17/300) + 0.1·(-17/30) = -0.107667, A_spy = -0.459;
    # b_civ = 1.9·51/2700 = 0.0358889, A_P1 = 11/90 - 0.0358889 = 0.0863333
    second = by_seat(released.rows([game])["clue"])
    assert second["player_3"] == pytest.approx([-0.459] * 2)
    assert second["player_1"] == pytest.approx([11 / 90 - 1.9 * 51 / 2700] * 2)
    # round 2, paper: A_spy = -17/30 - (-17/300) = -0.51
    assert by_seat(paper.rows([game])["clue"])["player_3"] == pytest.approx([-0.51] * 2)


def test_role_baseline_order_is_checked_and_not_part_of_the_saved_state():
    with pytest.raises(ValueError, match="order must be one of"):
        RoleBaselines(order="first")
    baselines = RoleBaselines(decay=0.9, order="update_then_subtract")
    assert baselines.advantages([("spy", "spy")], [1.0]) == pytest.approx([0.9])  # 1 - 0.1
    assert "order" not in baselines.state_dict()


# ----- Vision-Zero: decision groups -----

def test_shaped_votes_are_normalised_per_game_as_released(solid_source):
    """Shaped rewards, good format: right 0.3 + 1.2 + 0.99 = 2.49, wrong 0.3 - 1.2 = -0.9, N/A
    0.3 - 0.6 = -0.3. Group of 8: mean 13.74/8 = 1.7175, population std sqrt(14.50215/8) =
    1.346391, so a right vote gets 0.7725/1.346391 = 0.573756 (eps 1e-8)."""
    votes = [REASONED + "\\boxed{3}"] * 6 + [REASONED + "\\boxed{1}", REASONED + "\\boxed{N/A}"]
    game = result(spy_game(solid_source, votes))
    assert [t.reward for t in game.turns if t.phase == "decision"] == pytest.approx(
        [2.49] * 6 + [-0.9, -0.3])
    rows = make_recipe("spy", SelfPlayConfig(singleton_groups="reward")).rows([game])["decision"]
    assert [r.advantage for r in rows] == pytest.approx([0.573756] * 6 + [-1.944086, -1.498450],
                                                        abs=1e-6)


@pytest.mark.parametrize(("rule", "expected"), [("zero", 0.0), ("reward", 2.49)])
def test_a_game_of_one_vote(solid_source, rule, expected):
    """The released code returns a group of one unchanged (``len(rewards) <= 1``): a right,
    well-formatted vote keeps 2.49; the paper's normalisation has nothing to compare it with."""
    game = result(spy_game(solid_source, [REASONED + "\\boxed{3}"]))
    rows = make_recipe("spy", SelfPlayConfig(singleton_groups=rule)).rows([game])["decision"]
    assert [r.advantage for r in rows] == pytest.approx([expected], rel=1e-7)


# ----- V-Zero: verl's GRPO -----

def test_sample_std_as_verl():
    """Four questions about one image scored 0.4, 0, -1, 0.5: mean -0.025, deviations 0.425,
    0.025, -0.975, 0.525, squares summing to 1.4075. verl: std with ddof 1 = sqrt(1.4075 / 3) =
    0.684957, eps 1e-6: 0.425 / 0.684958 = 0.620476 ... The paper's population std is
    sqrt(1.4075 / 4) = 0.593190: 0.425 / 0.593190 = 0.716465 ..."""
    rewards = [0.4, 0.0, -1.0, 0.5]
    verl = GroupNormalization(std="sample", singletons="reward")
    assert verl(["a"] * 4, rewards) == pytest.approx([0.620476, 0.036499, -1.423444, 0.766470],
                                                     abs=1e-6)
    assert GroupNormalization()(["a"] * 4, rewards) == pytest.approx(
        [0.716465, 0.042145, -1.643654, 0.885044], abs=1e-6)
    # verl's group of one: mean 0, std 1, so 0.4 / (1 + 1e-6); equal rewards: zeros
    assert verl(["a", "b", "b"], [0.4, 0.5, 0.5]) == [0.4 / (1 + 1e-6), 0.0, 0.0]
    assert GroupNormalization()(["a"], [0.4]) == [0.0]
    assert group_normalize(["a"], [0.4], scale=False, singletons="reward") == [0.4]
    with pytest.raises(ValueError, match="std must be one of"):
        GroupNormalization(std="unbiased")
    with pytest.raises(ValueError, match="singletons must be one of"):
        GroupNormalization(singletons="keep")


def test_duel_recipe_normalises_question_groups_with_the_chosen_rule(solid_source):
    def duel(answers: list[str], name: str) -> GameResult:
        game = QADuelGame(QADuelConfig(num_answers=len(answers)), solid_source,
                          np.random.default_rng(0), name)
        game.play(game.pending()[0].index, QUESTION)
        for turn, answer in zip(game.pending(), answers, strict=True):
            game.play(turn.index, answer)
        return result(game)

    # one image asked twice: rewards min(0.5, 0.5) = 0.5 and 0.5·0.5 = 0.25 (majority A, not C);
    # another image asked once: min(0.5, 0.5) = 0.5
    games = [duel(["\\boxed{C}", "\\boxed{B}"], "x"), duel(["\\boxed{A}", "\\boxed{B}"], "x"),
             duel(["\\boxed{C}", "\\boxed{A}"], "y")]
    assert [g.turns[0].reward for g in games] == [0.5, 0.25, 0.5]
    released = make_recipe("qa_duel", SelfPlayConfig(group_std="sample", singleton_groups="reward"))
    # pair: mean 0.375, sample std sqrt(2·0.125²) = 0.176777: ±0.125 / (0.176777 + 1e-6)
    assert [r.advantage for r in released.rows(games)["question"]] == pytest.approx(
        [0.707103, -0.707103, 0.5 / (1 + 1e-6)], abs=1e-6)
    paper = make_recipe("qa_duel", SelfPlayConfig())  # population std 0.125: ±1; the lone one 0
    assert [r.advantage for r in paper.rows(games)["question"]] == pytest.approx([1, -1, 0])


# ----- V-Zero: the questioner's reward -----

def duel(source, answers: list[str], question: str = QUESTION, **options) -> QADuelGame:
    game = QADuelGame(QADuelConfig(num_answers=len(answers), **options), source,
                      np.random.default_rng(0), "q")
    game.play(game.pending()[0].index, question)
    for turn, answer in zip(game.pending(), answers, strict=True):
        game.play(turn.index, answer)
    assert game.done
    return game


def test_unboxed_answers_vote_none_and_can_win(solid_source):
    """Intuitive C; four boxed C, five answers without a box, one boxed A. The released server:
    extract_boxed_content gives "None" five times, "C" four times: "None" wins, reward 0. By
    letters: C is the majority, c = 4/10, agreeing: min(0.4, 0.6) = 0.4."""
    answers = ["\\boxed{C}"] * 4 + ["I would say C"] * 5 + ["\\boxed{A}"]
    assert duel(solid_source, answers).moves[0].reward == pytest.approx(0.4)
    released = duel(solid_source, answers, answer_votes="boxed_text")
    assert released.moves[0].reward == 0.0
    assert released.pseudo_label == "C"  # the label and the band still read letters
    assert released.stats()["confidence"] == pytest.approx(0.4)
    assert released.stats()["agrees"] == 0.0 and released.stats()["in_band"] == 1.0


@pytest.mark.parametrize(("answers", "letters", "boxed_text"), [
    # "C) 3" is an answer of its own for the server: it wins 6/10 and is not the letter C
    # (0.5·0.6 = 0.3); by letters all ten say C: min(1, 0) = 0
    (["\\boxed{C) 3}"] * 6 + ["\\boxed{C}"] * 4, 0.0, 0.3),
    # the server reads only the last box, which never closes: "None" x 6 wins; by letters the
    # last complete box is C: c = 0.6 agreeing, min(0.6, 0.4) = 0.4
    (["\\boxed{C} and \\boxed{"] * 6 + ["\\boxed{A}"] * 4, 0.4, 0.0),
    # empty boxes vote for nothing but count in c: C 3/10 agreeing: min(0.3, 0.7) = 0.3 both ways
    (["\\boxed{}"] * 7 + ["\\boxed{C}"] * 3, 0.3, 0.3),
    # "\text{C}" grades as C (mathruler) and wins the server's vote 4 to 3 to 3: c = 0.4,
    # agreeing: min(0.4, 0.6) = 0.4; by letters "\text{C}" is nothing, "(C)" is C: C 3, A 3,
    # the tie to A, answered first: c = 0.3 disagreeing, 0.5·0.3 = 0.15
    (["\\boxed{\\text{C}}"] * 4 + ["\\boxed{A}"] * 3 + ["\\boxed{(C)}"] * 3, 0.15, 0.4),
    # "(C)" grades as C too: it wins 4 to 3 to 3, c = 0.4, agreeing: 0.4; by letters C 7: 0.3
    (["\\boxed{(C)}"] * 4 + ["\\boxed{A}"] * 3 + ["\\boxed{C}"] * 3, 0.3, 0.4),
])
def test_boxed_text_votes_as_the_released_server(solid_source, answers, letters, boxed_text):
    assert duel(solid_source, answers).moves[0].reward == pytest.approx(letters)
    released = duel(solid_source, answers, answer_votes="boxed_text")
    assert released.moves[0].reward == pytest.approx(boxed_text)


def test_ties_go_to_the_answer_given_first(solid_source):
    """Released: max() over a dict in insertion order (server), the first of answer_group with
    the top count (evaluator). D and B 2 each, D first: D is the label; intuitive C disagrees,
    0.5·0.5 = 0.25. Answered B first, B wins: no pull towards the earliest letter."""
    game = duel(solid_source, ["\\boxed{D}", "\\boxed{B}", "\\boxed{D}", "\\boxed{B}"])
    assert game.pseudo_label == "D" and game.moves[0].reward == pytest.approx(0.25)
    assert duel(solid_source, ["\\boxed{B}", "\\boxed{D}"] * 2).pseudo_label == "B"
    # the server's vote: "c" and "A" 2 each, "c" first wins (c = 0.5) and grades as C:
    # min(0.5, 0.5) = 0.5; "A" first: 0.5·0.5 = 0.25. The label (capitals only) is A both times.
    boxed = duel(solid_source, ["\\boxed{c}", "\\boxed{A}"] * 2, answer_votes="boxed_text")
    assert boxed.pseudo_label == "A" and boxed.moves[0].reward == pytest.approx(0.5)
    boxed = duel(solid_source, ["\\boxed{A}", "\\boxed{c}"] * 2, answer_votes="boxed_text")
    assert boxed.moves[0].reward == pytest.approx(0.25)


def test_lowercase_letters(solid_source):
    """Intuitive B; five "b", three "B", two "A". Capitals only: B 3, A 2: c = 0.3 agreeing,
    min(0.3, 0.7) = 0.3. Lower case read too: B 8: min(0.8, 0.2) = 0.2. The released server:
    "b" 5 wins (c = 0.5), grade_answer("b", "B") holds: min(0.5, 0.5) = 0.5."""
    answers = ["\\boxed{b}"] * 5 + ["\\boxed{B}"] * 3 + ["\\boxed{A}"] * 2
    question = QUESTION.replace("<answer>C</answer>", "<answer>B</answer>")
    assert duel(solid_source, answers, question).moves[0].reward == pytest.approx(0.3)
    lowercase = duel(solid_source, answers, question, lowercase_letters=True)
    assert lowercase.moves[0].reward == pytest.approx(0.2)
    assert [m.valid for m in lowercase.moves[1:]] == [True] * 10
    released = duel(solid_source, answers, question, lowercase_letters=True,
                    answer_votes="boxed_text")
    assert released.moves[0].reward == pytest.approx(0.5)
    # the questioner's "b": invalid in capitals, B in lower case (the released code upper-cases)
    small = QUESTION.replace("<answer>C</answer>", "<answer>b</answer>")
    invalid = QADuelGame(QADuelConfig(), solid_source, np.random.default_rng(0), "q")
    invalid.play(invalid.pending()[0].index, small)
    assert invalid.done and invalid.moves[0].reward == -1.0
    game = duel(solid_source, ["\\boxed{B}"] * 2, small, lowercase_letters=True)
    assert game.question.intuitive == "B" and game.stats()["agrees"] == 1.0


@pytest.mark.parametrize(("options", "message"), [
    ({"answer_votes": "strings"}, "answer_votes must be one of ['letters', 'boxed_text']"),
    ({"lowercase_letters": "yes"}, "lowercase_letters must be true or false, got 'yes'"),
])
def test_duel_switches_are_checked(options, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        QADuelConfig(**options)


# ----- through train.py's Hydra config -----

def compose_train(*overrides: str):
    with initialize_config_dir(str(train.CONFIG_FILE.parent), version_base=None):
        cfg = compose("train", overrides=list(overrides))
    check_train_config(cfg, config_file=train.CONFIG_FILE, agents=train.POLICY_AGENTS)
    return OmegaConf.to_container(cfg, resolve=True)


def test_fidelity_released_reaches_the_game_and_the_recipe():
    spy = compose_train("fidelity=released")
    recipe = make_recipe("spy", SelfPlayConfig(**spy["selfplay"]))
    assert (recipe.baselines.decay, recipe.baselines.order) == (0.9, "update_then_subtract")
    assert recipe.normalization == GroupNormalization("population", "reward")
    assert type(recipe.schedule).__name__ == "FixedAlternation"
    env = envs.make(**spy["env"])
    assert env.config == SpyConfig(**{k: v for k, v in spy["env"].items() if k != "name"})
    assert (env.config.decision_reward, env.config.invalid_clue_penalty) == (
        "shaped", 0.0)
    duel = compose_train("env=qa_duel", "fidelity=released", "env.num_answers=5")
    recipe = make_recipe("qa_duel", SelfPlayConfig(**duel["selfplay"]))
    assert recipe.normalization == GroupNormalization("sample", "reward")
    assert duel["env"]["answer_votes"] == "boxed_text" and duel["env"]["lowercase_letters"]
    assert duel["env"]["num_answers"] == 5  # the command line still wins
    # the default is the paper's: the dataclasses' defaults, the spy recipe's observer aside
    paper = compose_train("env=qa_duel")
    assert paper["selfplay"] == compose_train("env=qa_duel", "fidelity=paper")["selfplay"]
    assert (paper["env"]["answer_votes"], paper["selfplay"]["group_std"]) == (
        "letters", "population")


@pytest.mark.parametrize(("overrides", "expected"), [
    (("selfplay.baseline_order=first",), "selfplay.baseline_order must be one of "
                                         "['subtract_then_update', 'update_then_subtract']"),
    (("selfplay.group_std=ddof1",), "selfplay.group_std must be one of ['population', 'sample']"),
    (("selfplay.singleton_groups=keep",), "selfplay.singleton_groups must be one of"),
    (("env=qa_duel", "env.answer_votes=strings"), "env.answer_votes must be one of"),
    (("env=qa_duel", "fidelity=released", "env.lowercase_letters=2"),
     "env.lowercase_letters must be true or false, got 2"),
])
def test_a_wrong_switch_is_one_line_naming_the_key(overrides, expected):
    with pytest.raises(ConfigError) as error:
        compose_train(*overrides)
    assert str(error.value).startswith(expected)


def test_an_unknown_fidelity_lists_the_choices():
    with pytest.raises(MissingConfigException, match="Available options in 'fidelity'"):
        compose_train("fidelity=exact")


def test_fidelity_released_without_the_games_preset_is_an_error(tmp_path):
    (tmp_path / "spy_released.yaml").write_text("env: {}\n")
    check_fidelity("released", "spy", tmp_path)
    check_fidelity("paper", "count", tmp_path)  # the paper's rules need no preset
    with pytest.raises(ConfigError, match=r"fidelity=released: no released-code preset for "
                                          r"env=count \(presets: spy;"):
        check_fidelity("released", "count", tmp_path)
