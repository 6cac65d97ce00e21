"""The FAQ facts of the support task: key sentences, extra sentences and customer questions.

One fact per ``@ topic.name`` block (accounts, orders, shipping and returns
here; billing, subscriptions, devices, store and privacy in
:mod:`lmos.train.corpus_support_faq_more`; banks, telecoms, travel and other services in
:mod:`lmos.train.corpus_support_faq_services`): ``K:`` lines are ways to write the key
sentence (the one an answer must restate), ``X:`` lines optional extra
sentences of the same passage, ``Q:`` lines ways a customer asks about it;
an indented line continues the entry above.
Slots (``{co}``, ``{days}``, ``{amount}``, ...) are filled per conversation
by :mod:`lmos.train.corpus_support`, so the model learns to copy facts from
the passage rather than memorise them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmos.train.corpus_support_faq_more import FACTS_TEXT_MORE
from lmos.train.corpus_support_faq_services import FACTS_TEXT_SERVICES


@dataclass(frozen=True)
class Fact:
    name: str
    keys: tuple[str, ...]
    extras: tuple[str, ...]
    questions: tuple[str, ...]


FACTS_TEXT = """
@ account.password
K: To reset your password, select "Forgot password" on the sign-in page and follow the link we email
    you.
K: You can reset your password at any time under {menu} > Security > Reset password.
X: The reset link is valid for {hours} hours.
X: For your security, we never ask for your password by email or phone.
Q: how do I reset my password?
Q: I forgot my password, what should I do?
Q: can't log in because I don't remember my password
Q: How can I change my password?
Q: what's the way to recover a lost password
Q: i need a new password, how?
Q: Where do I go to reset my password?
@ account.email
K: To change the email address on your account, go to {menu} > Profile and enter the new address.
K: You can update your email address under {menu} > Profile; we send a confirmation link to the new
    address.
X: The change takes effect once you click the confirmation link.
Q: how do I change my email address?
Q: I have a new email, how do I update it on my account?
Q: Can I use a different email for my account?
Q: where can I edit my email
Q: need to switch the email on my profile
Q: How can I update the email linked to my account?
@ account.delete
K: To close your account, write to {email} from the address you signed up with and we will delete it
    within {days} days.
K: You can delete your account under {menu} > Privacy > Delete account; deletion is permanent after
    {days} days.
X: Any remaining balance is refunded to your original payment method.
Q: how do I delete my account?
Q: I want to close my account
Q: can you remove my account and all my data?
Q: How do I cancel my {co} account permanently?
Q: what's the process for account deletion
Q: please tell me how to get rid of my account
@ account.twofactor
K: Two-step verification can be turned on under {menu} > Security; we then text a {n}-digit code
    each time you sign in.
K: To enable two-factor authentication, open {menu} > Security and choose "Verification codes".
X: You can also use an authenticator app instead of text messages.
Q: how do I turn on two-factor authentication?
Q: Can I add 2FA to my account?
Q: how to enable two-step verification
Q: is there a way to get a login code by text?
Q: I'd like extra security when signing in, what can I do?
Q: where do I switch on verification codes?
@ account.locked
K: After {n} failed sign-in attempts your account is locked for {hours} hours to protect it.
K: Accounts are locked for {hours} hours after {n} wrong passwords in a row.
X: If you need access sooner, contact us at {email}.
Q: why is my account locked?
Q: I got locked out after typing the wrong password
Q: my account says it's blocked, what happened?
Q: How long will my account stay locked?
Q: it says too many attempts, can I still log in?
@ account.username
K: Usernames can be changed once every {days} days under {menu} > Profile.
K: You may change your username under {menu} > Profile, once every {days} days.
Q: can I change my username?
Q: how do I pick a new user name?
Q: How often can I rename my profile?
Q: I don't like my username, can it be changed?
Q: where do I edit my display name
@ order.cancel
K: You can cancel an order within {hours} hours of placing it from {menu} > Orders > Cancel.
K: Orders can be cancelled free of charge until they ship, from the Orders page of your account.
X: Once an order has shipped, you can return it instead.
Q: how do I cancel my order?
Q: I ordered by mistake, can I cancel?
Q: Is it possible to cancel an order I just placed?
Q: can I still cancel what I bought yesterday?
Q: I changed my mind about my purchase, how do I cancel it?
Q: how can I stop an order
@ order.track
K: To track your order, open {menu} > Orders and select "Track package"; the tracking number is also
    in your shipping email.
K: Every shipped order has a tracking link in the confirmation email and on the Orders page.
X: Tracking can take up to {hours} hours to update after dispatch.
Q: where is my order?
Q: how can I track my package?
Q: Is there a tracking number for my parcel?
Q: how do I find out where my delivery is
Q: I want to see the status of my shipment
Q: can I follow my order online?
@ order.change
K: You can change the address or items of an order until it is packed, usually within {hours} hours
    of ordering.
K: Orders can be edited from the Orders page until they are packed, which is usually {hours} hours
    after you order.
Q: can I change my order after placing it?
Q: I need to add an item to my order
Q: How do I edit an order I already placed?
Q: is it too late to modify my order?
Q: I put the wrong size in my order, can I fix it?
@ order.missing
K: If a package shows as delivered but has not arrived, contact us within {days} days and we will
    send a replacement or a refund.
K: Report a missing parcel within {days} days of its delivery date and we will replace or refund it.
X: Please check with neighbours and your building's mailroom first.
Q: my package says delivered but I didn't get it
Q: what do I do if my parcel never arrived?
Q: My order is missing
Q: The delivery didn't show up, can you help?
Q: tracking says delivered but nothing is here
@ order.damaged
K: If an item arrives damaged, send a photo to {email} within {days} days and we will replace it at
    no cost.
K: Damaged items are replaced free of charge when reported with a photo within {days} days of delivery.
Q: my item arrived broken
Q: what if the product came damaged?
Q: The box was crushed and the item is broken, what now?
Q: I received a damaged product, can I get a new one?
Q: something in my order was smashed
@ shipping.time
K: Standard shipping takes {days} to {days2} business days; express shipping arrives in {n} business
    days.
K: Orders ship within {hours} hours and standard delivery takes {days} to {days2} business days.
X: Delivery times may be longer during holidays.
Q: how long does shipping take?
Q: when will my order arrive?
Q: How many days for delivery?
Q: what's the delivery time for standard shipping?
Q: how fast do you ship?
Q: How soon will I get my package?
@ shipping.cost
K: Shipping is free on orders over {amount}; smaller orders pay a flat fee of {amount2}.
K: Standard shipping costs {amount2}, and it is free for orders above {amount}.
X: Express shipping is charged at checkout.
Q: how much is shipping?
Q: Do you offer free shipping?
Q: what does delivery cost?
Q: is shipping free?
Q: How much will I pay for postage?
Q: what are your shipping fees
@ shipping.international
K: We ship to {n} countries; international orders take {days} to {days2} business days and may incur
    import duties.
K: International shipping is available to most countries and takes {days} to {days2} business days.
X: Any customs fees are paid by the recipient.
Q: do you ship internationally?
Q: Can you deliver to another country?
Q: I live abroad, can I order?
Q: Do you ship outside the country?
Q: what about overseas delivery?
@ shipping.address
K: To change the delivery address, edit the order under {menu} > Orders before it ships.
K: The shipping address can be changed from the Orders page as long as the parcel has not shipped.
Q: how do I change my delivery address?
Q: I moved, can I send my order to a new address?
Q: Can I update the shipping address on my order?
Q: wrong address on my order, how to fix
Q: I need the package delivered somewhere else
@ returns.window
K: You can return any item within {days} days of delivery for a full refund, as long as it is unused.
K: Unused items can be returned within {days} days of delivery.
X: Start a return from {menu} > Orders > Return item.
X: Sale items can be exchanged but not refunded.
Q: what is your return policy?
Q: can I return an item?
Q: How long do I have to send something back?
Q: is it too late to return my order?
Q: How many days do I have for a return?
Q: I don't want the product anymore, can I send it back?
@ returns.refund_time
K: Refunds are issued to your original payment method within {days} business days of us receiving
    the return.
K: Once your return arrives, we refund the original payment method within {days} business days.
X: Your bank may take a few more days to show the credit.
Q: how long does a refund take?
Q: when will I get my money back?
Q: I returned my order, when is the refund coming?
Q: How long until the refund shows up?
Q: when do refunds arrive
@ returns.label
K: Return shipping is free: print the prepaid label from {menu} > Orders > Return item.
K: We provide a prepaid return label, which you can print from the Orders page.
Q: do I have to pay for return shipping?
Q: how do I get a return label?
Q: Who pays postage for returns?
Q: Is the return free?
Q: where can I print a shipping label to send it back
@ returns.exchange
K: To exchange an item for a different size or colour, start a return and place a new order; we
    refund the first item.
K: Exchanges are done as a return plus a new order, and the returned item is refunded within {days}
    days.
Q: can I exchange an item?
Q: How do I swap for a different size?
Q: I want another colour, can I exchange it?
Q: do you do exchanges?
Q: the size is wrong, can I trade it for a bigger one?
"""


def _parse(text: str) -> list[Fact]:
    facts: list[Fact] = []
    parts: dict[str, list[str]] = {}
    name, tag = "", ""

    def flush() -> None:
        if name:
            facts.append(Fact(name, tuple(parts["K"]), tuple(parts.get("X", [])), tuple(parts["Q"])))

    for raw in text.strip().splitlines():
        line = raw.strip()
        if raw.startswith(" ") and line:  # a continuation of the entry above
            parts[tag][-1] += " " + line
        elif line.startswith("@"):
            flush()
            name, parts = line[1:].strip(), {}
        elif line:
            tag, _, body = line.partition(":")
            parts.setdefault(tag, []).append(body.strip())
    flush()
    return facts


FACTS = _parse(FACTS_TEXT) + _parse(FACTS_TEXT_MORE) + _parse(FACTS_TEXT_SERVICES)
