"""Forms of the customer's self-service section (tracking/_track_requests.html).

They only parse what the browser sent; the rules (lengths, control characters, offered slots,
once per order…) live in tracking.customer's services, which every caller goes through. Field
names match the keys of the ValidationErrors those services raise.
"""

from datetime import datetime

from django import forms
from django.core.exceptions import ValidationError

from dispatch.forms import NoColonLabels
from dispatch.services import CUSTOMER_INSTRUCTIONS_MAX

MESSAGE_MAX = 1000
COMMENT_MAX = 1000
RATING_CHOICES = [(n, f"{n} star{'s' if n > 1 else ''}") for n in range(1, 6)]


def slot_value(start: datetime, end: datetime) -> str:
    """How a slot travels in the form: both ends in ISO 8601 with their offset."""
    return f"{start.isoformat()}/{end.isoformat()}"


class InstructionsForm(NoColonLabels, forms.Form):
    # strip=False: the service strips and counts after normalising line ends (\r\n → \n).
    text = forms.CharField(
        label="Instructions for the driver",
        required=False,
        strip=False,
        help_text="A door code, a safe place, or a neighbour who can take it. Leave empty to remove them.",
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": CUSTOMER_INSTRUCTIONS_MAX}),
    )


class WindowForm(NoColonLabels, forms.Form):
    slot = forms.CharField(error_messages={"required": "Choose one of the times offered."})

    def clean_slot(self) -> tuple[datetime, datetime]:
        start, _, end = self.cleaned_data["slot"].partition("/")
        try:
            start_at, end_at = datetime.fromisoformat(start), datetime.fromisoformat(end)
        except ValueError:
            raise ValidationError("Choose one of the times offered.") from None
        if start_at.tzinfo is None or end_at.tzinfo is None:
            raise ValidationError("Choose one of the times offered.")
        return start_at, end_at


class MessageForm(NoColonLabels, forms.Form):
    text = forms.CharField(
        label="Message to the delivery team",
        strip=False,
        error_messages={"required": "Write your message first."},
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": MESSAGE_MAX}),
    )


class RatingForm(NoColonLabels, forms.Form):
    rating = forms.TypedChoiceField(
        label="How was your delivery?",
        choices=RATING_CHOICES,
        coerce=int,
        error_messages={
            "required": "Choose from 1 to 5 stars.",
            "invalid_choice": "Choose from 1 to 5 stars.",
        },
    )
    comment = forms.CharField(
        label="Anything to add? (optional)",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 2, "maxlength": COMMENT_MAX}),
    )
