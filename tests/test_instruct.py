"""Tests for the text stage: narration sentences -> StepText."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.instruct import EMPTY_VISUAL_INSTRUCTION, MAX_INSTRUCTION_CHARS, describe_step
from pipeline.model import Callout, Sentence, StepText

# The scorer's test for an instruction that still opens like speech.
CHATTY = re.compile(r"\s*(i\b|i'm|i'll|we\b|we're|so\b|okay|ok\b|now\b|then\b|first\b|next\b|finally\b)")


def instruction(*sentences, visual=True):
    return describe_step(list(sentences), visual).instruction


# ------------------------------------------------------------ instruction rewriting

def test_progressive_first_person_becomes_base_imperative():
    assert instruction("Now I'm navigating to the EC2 dashboard.") == "Navigate to the EC2 dashboard."


def test_stacked_discourse_markers_are_dropped():
    assert instruction("So first I run kubectl get pods.") == "Run kubectl get pods."


def test_first_marker_and_progressive_listing():
    assert instruction("First I'm listing the pods in the default namespace.") == \
        "List the pods in the default namespace."


def test_leading_place_phrase_moves_after_the_action():
    assert instruction("In the cloud console I open the Auto Scaling page.") == \
        "Open the Auto Scaling page in the cloud console."


def test_spoken_value_after_then_is_kept_as_said():
    assert instruction("Then I switch the instance type to t3 large.") == "Switch the instance type to t3 large."


def test_two_actions_joined_by_and_stay_one_sentence():
    assert instruction("Now I save the changes and wait for the confirmation.") == \
        "Save the changes and wait for the confirmation."


def test_reason_before_so_becomes_a_since_clause():
    assert instruction("The payments pod is in a crash loop, so I'm reading its logs.") == \
        "Read its logs, since the payments pod is in a crash loop."


def test_value_statement_with_screen_change_becomes_set():
    assert instruction("The hotfix version is five point two point one.") == \
        "Set the hotfix version to five point two point one."


def test_value_statement_without_screen_change_stays_a_statement():
    step = describe_step(["The hotfix version is five point two point one."], False)
    assert (step.instruction, step.kind) == ("The hotfix version is five point two point one.", "note")


def test_state_statement_with_screen_change_is_not_turned_into_set():
    assert instruction("The payments pod is in a crash loop.") == "The payments pod is in a crash loop."


def test_okay_we_will_and_trailing_now_are_dropped():
    assert instruction("Okay, we'll apply the migration now.") == "Apply the migration."


@pytest.mark.parametrize("said", [
    "I'm going to restart the service.", "I want to restart the service.", "Let's restart the service.",
    "We need to restart the service.", "I have to restart the service.", "I'll just restart the service.",
    "You can restart the service.", "I should restart the service.", "Let me restart the service.",
])
def test_subject_and_auxiliaries_reduce_to_the_verb(said):
    assert instruction(said) == "Restart the service."


def test_second_person_narration_becomes_imperative():
    assert instruction("You click Save.") == "Click Save."


def test_perfect_tense_without_punctuation_becomes_imperative():
    assert instruction("I've clicked save") == "Click save."


def test_apposition_after_typing_is_kept_verbatim():
    assert instruction("I'm typing the service name, orders.") == "Type the service name, orders."


def test_parallel_progressive_verbs_all_become_base_form():
    assert instruction("I'm listing the pods and checking their status.") == "List the pods and check their status."


def test_parallel_past_verbs_all_become_base_form():
    assert instruction("I clicked save and waited for the banner.") == "Click save and wait for the banner."


def test_later_first_person_clauses_lose_their_subject():
    assert instruction("so first i run kubectl get pods then i check the logs and then i restart the deployment") \
        == "Run kubectl get pods then check the logs and then restart the deployment."


def test_lowercase_transcript_is_capitalised_and_case_of_rest_kept():
    assert instruction("now i'm navigating to the ec2 dashboard") == "Navigate to the ec2 dashboard."


def test_trailing_please_is_stripped():
    assert instruction("I click Save, please.") == "Click Save."


def test_leading_time_clause_moves_after_the_action():
    assert instruction("Once the page loads, I click Save.") == "Click Save once the page loads."


def test_unmoved_now_that_clause_does_not_open_like_speech():
    assert instruction("Now that the pods are up the canary starts.", visual=False) == \
        "Once the pods are up the canary starts."


def test_being_on_a_page_becomes_go_to():
    assert instruction("I'm on the login page.") == "Go to the login page."


def test_going_to_a_place_is_the_main_verb_not_an_auxiliary():
    assert instruction("I'm going to the dashboard.") == "Go to the dashboard."


def test_show_you_how_to_becomes_the_shown_action():
    assert instruction("I'm going to show you how to deploy the checkout service.") == "Deploy the checkout service."


def test_hyphenated_verb_is_lemmatised_on_its_last_part():
    assert instruction("Now I'm right-clicking the instance.") == "Right-click the instance."


def test_curly_apostrophes_are_understood():
    assert instruction("I\u2019m typing the service name, orders.") == "Type the service name, orders."


def test_disfluencies_are_removed():
    assert instruction("I, um, click Save.") == "Click Save."


def test_pronouns_left_in_the_instruction_address_the_reader():
    assert instruction("I open my terminal so I can run the script.") == "Open your terminal so you can run the script."


def test_quoted_text_keeps_its_pronouns():
    assert instruction('I type "I agree" in the box.') == 'Type "I agree" in the box.'


def test_opinion_opener_is_dropped_from_a_statement():
    assert instruction("I think the canary is fine.", visual=False) == "The canary is fine."


def test_first_person_statement_is_addressed_to_the_reader():
    assert instruction("We have three replicas.", visual=False) == "You have three replicas."


def test_statement_opening_with_a_command_keeps_the_command_lowercase():
    assert instruction("kubectl get pods shows three pods.", visual=False) == "kubectl get pods shows three pods."


def test_last_first_person_action_is_chosen():
    assert instruction("I open the menu.", "Now I click Settings.") == "Click Settings."


def test_run_on_transcript_splits_at_now_before_a_pronoun():
    step = describe_step(["this one is slow now i restart the payments deployment"], True)
    assert step.instruction == "Restart the payments deployment."


def test_long_instruction_is_capped_at_a_word_boundary():
    got = instruction("I type " + "alpha beta " * 60)
    assert len(got) <= MAX_INSTRUCTION_CHARS
    assert got.endswith("alpha.") or got.endswith("beta.")


# ------------------------------------------------------------ kinds and callouts

def test_bare_caution_lends_its_warning_to_the_explaining_sentence():
    step = describe_step(["Be careful here. Restarting the deployment drops in-flight requests.",
                          "Now I restart the payments deployment."], True)
    assert step == StepText(
        instruction="Restart the payments deployment.", kind="warning",
        callouts=(Callout("warning", "Restarting the deployment drops in-flight requests."),))


def test_bare_caution_is_kept_when_nothing_explains_it():
    step = describe_step(["Be careful here.", "Now I click delete."], True)
    assert (step.kind, step.callouts) == ("warning", (Callout("warning", "Be careful here."),))


def test_spoken_only_make_sure_is_a_warning_repeated_as_callout():
    step = describe_step(["Before you start, make sure the hotfix build has passed its tests."], False)
    assert step == StepText(
        instruction="Make sure the hotfix build has passed its tests.", kind="warning",
        callouts=(Callout("warning", "Make sure the hotfix build has passed its tests."),))


def test_purpose_clause_check_is_verification_with_the_check_as_callout():
    step = describe_step(["Then I check health to confirm the error rate stayed at zero."], True)
    assert step == StepText(
        instruction="Check health to confirm the error rate stayed at zero.", kind="verification",
        callouts=(Callout("verify", "Confirm the error rate stayed at zero."),))


def test_going_back_to_check_that_is_verification():
    step = describe_step(["Finally I go back to instances to check that they are running."], True)
    assert (step.instruction, step.kind) == ("Go back to instances to check that they are running.", "verification")


def test_verify_that_is_verification():
    assert describe_step(["Finally I verify that all the nodes are ready."], True).kind == "verification"


def test_make_sure_a_result_holds_is_verification_not_warning():
    assert describe_step(["Make sure they are running."], True).kind == "verification"


@pytest.mark.parametrize("said", ["Now I deploy and confirm.", "I click deploy and confirm the dialog."])
def test_confirm_as_a_button_press_is_an_action(said):
    assert describe_step([said], True).kind == "action"


def test_checking_a_checkbox_is_an_action():
    assert describe_step(["I check the box to enable logging."], True).kind == "action"


def test_separate_verify_sentence_becomes_a_callout_and_keeps_the_action():
    step = describe_step(["Now I restart the deployment. Then I confirm that the pods are running."], True)
    assert step == StepText(instruction="Restart the deployment.", kind="action",
                            callouts=(Callout("verify", "Confirm that the pods are running."),))


def test_spoken_only_statement_is_a_note_with_its_time_clause_moved():
    step = describe_step(["While the canary runs, the controller watches the error budget for ten minutes."], False)
    assert (step.instruction, step.kind) == (
        "The controller watches the error budget for ten minutes while the canary runs.", "note")


def test_spoken_only_imperative_without_caution_is_a_note():
    assert describe_step(["Click Save."], False).kind == "note"


def test_plain_action_with_screen_change_is_an_action_without_callouts():
    step = describe_step(["I set the desired capacity to four."], True)
    assert (step.kind, step.callouts) == ("action", ())


def test_tip_becomes_a_tip_callout_not_the_instruction():
    step = describe_step(["Tip: you can also press Ctrl+S.", "I click Save."], True)
    assert step == StepText(instruction="Click Save.", kind="action",
                            callouts=(Callout("tip", "You can also press Ctrl+S."),))


def test_negated_action_becomes_do_not_warning():
    step = describe_step(["I don't restart the database here."], True)
    assert (step.instruction, step.kind) == ("Do not restart the database here.", "warning")


def test_warning_sentence_before_a_check_leaves_the_step_a_verification():
    step = describe_step(["Never skip this step.", "Then I verify that all the nodes are ready."], True)
    assert (step.kind, step.callouts[0]) == ("verification", Callout("warning", "Never skip this step."))


# ------------------------------------------------------------ inputs

def test_cli_command_is_taken_to_the_end_of_its_clause():
    step = describe_step(["I run kubectl rollout restart deployment/payments -n payments to restart it."], True)
    assert step.inputs == ("kubectl rollout restart deployment/payments -n payments",)


def test_spoken_version_becomes_digits():
    assert describe_step(["The hotfix version is five point two point one."], True).inputs == ("5.2.1",)


def test_spoken_decimal_is_not_a_version_without_context():
    assert describe_step(["I wait two point five seconds."], True).inputs == ()


def test_spoken_two_part_version_after_the_word_version():
    assert describe_step(["I pick version two point four."], True).inputs == ("2.4",)


def test_written_versions_are_extracted():
    assert describe_step(["I bump it to v2.4.1 and then to version 5.2."], True).inputs == ("v2.4.1", "5.2")


def test_quoted_string_is_extracted():
    assert describe_step(['I type "orders v2" in the search box.'], True).inputs == ("orders v2",)


def test_identifiers_with_dashes_and_dots_are_extracted_in_order():
    step = describe_step(["I set the region to us-east-1 and the instance type to t3.large."], True)
    assert step.inputs == ("us-east-1", "t3.large")


def test_slash_identifier_outside_a_command_is_an_input():
    assert describe_step(["I open deployment/payments and/or its pods."], True).inputs == ("deployment/payments",)


def test_hyphenated_english_words_are_not_inputs():
    step = describe_step(["I double-check that in-flight requests drain.", "Restarting drops in-flight traffic."], True)
    assert step.inputs == ()


def test_typed_value_after_a_field_name_is_an_input():
    assert describe_step(["I'm entering the service name, checkout."], True).inputs == ("checkout",)


def test_plain_english_narration_has_no_inputs():
    assert describe_step(["Now I save the changes and wait for the confirmation."], True).inputs == ()


def test_inputs_are_deduplicated_across_sentences():
    step = describe_step(["I run kubectl get pods.", "Then I run kubectl get pods again."], True)
    assert step.inputs == ("kubectl get pods",)


def test_cli_name_after_a_determiner_is_not_a_command():
    assert describe_step(["I open the docker dashboard."], True).inputs == ()


def test_make_sure_is_not_a_make_command():
    assert describe_step(["Make sure the build passed."], False).inputs == ()


def test_make_after_run_is_a_command():
    assert describe_step(["I run make release."], True).inputs == ("make release",)


def test_misheard_kubectl_is_normalised_in_inputs_only():
    step = describe_step(["I run cube control get pods."], True)
    assert (step.instruction, step.inputs) == ("Run cube control get pods.", ("kubectl get pods",))


def test_identifier_inside_a_command_is_not_repeated():
    step = describe_step(["I run kubectl describe deployment/payments."], True)
    assert step.inputs == ("kubectl describe deployment/payments",)


# ------------------------------------------------------------ empty and odd input

def test_no_narration_and_no_change_is_an_empty_note():
    assert describe_step([], False) == StepText(instruction="", kind="note")


def test_no_narration_with_a_change_gets_the_placeholder_action():
    assert describe_step([], True) == StepText(instruction=EMPTY_VISUAL_INSTRUCTION, kind="action")


def test_filler_and_blank_sentences_count_as_no_narration():
    assert describe_step(["Okay.", "   ", "..."], False) == StepText(instruction="", kind="note")


def test_sentence_records_are_accepted():
    said = Sentence(start_s=0.0, end_s=1.0, text="I'm typing the service name, orders.")
    assert describe_step([said], True).instruction == "Type the service name, orders."


_SPEECH = st.lists(st.sampled_from(
    ["so", "now", "okay", "I", "I'm", "we'll", "you", "let's", "going", "to", "click", "the", "Save",
     "button", "and", "then", "checking", "logs", "make", "sure", "careful", "kubectl", "get", "pods",
     "five", "point", "two", ",", ".", "first", "finally", "please", "while", "it", "runs", "is"]),
    max_size=40).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(_SPEECH, max_size=4), st.booleans())
def test_any_narration_gives_a_clean_sentence_or_nothing(sentences, visual):
    step = describe_step(sentences, visual)
    text = step.instruction
    assert text == "" or (text.endswith(".") and len(text) <= MAX_INSTRUCTION_CHARS)
    assert text == "" or not text[0].islower() or text.startswith("kubectl")  # commands keep their case
    assert not CHATTY.match(text.lower())
    assert step.kind in ("action", "verification", "warning", "note")
    assert all(c.kind in ("warning", "tip", "verify") and c.text.endswith(".") for c in step.callouts)


def test_a_value_after_a_comma_is_not_turned_into_a_verb():
    assert describe_step(["I'm typing the service name, billing."], True).instruction == \
        "Type the service name, billing."


def test_an_action_after_and_first_stands_alone():
    text = "So I have been paged for orders, and first I pull the error logs from the last 30 minutes."
    assert describe_step([text], True).instruction == "Pull the error logs from the last 30 minutes."


def test_last_with_a_comma_is_a_filler():
    assert describe_step(["Last, I add a note to the incident."], True).instruction == "Add a note to the incident."


@pytest.mark.parametrize("said, expected", [
    ("Last I post a note to the ops channel.", "Post a note to the ops channel."),
    ("Second we drain the pool.", "Drain the pool."),
    ("The last step is cleanup.", "The last step is cleanup."),
])
def test_an_ordinal_opens_a_step_only_before_the_narrators_subject(said, expected):
    assert describe_step([said], True).instruction == expected
