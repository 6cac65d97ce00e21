"""More FAQ facts of the support task (billing, subscriptions, devices, store, privacy, app).

Same format as :data:`lmos.train.corpus_support_faq.FACTS_TEXT`.
"""

from __future__ import annotations

FACTS_TEXT_MORE = """
@ billing.methods
K: We accept credit and debit cards, PayPal and bank transfer.
K: You can pay by card, PayPal or gift card; cash on delivery is not available.
Q: what payment methods do you accept?
Q: Can I pay with PayPal?
Q: how can I pay for my order?
Q: Do you take credit cards?
Q: which ways of paying do you support
Q: can I pay cash on delivery?
@ billing.invoice
K: Invoices are available to download under {menu} > Billing > Invoices.
K: You can download a PDF invoice for every order from {menu} > Billing.
X: Invoices are also emailed to you on the {nth} of each month.
Q: where can I find my invoice?
Q: how do I get a receipt for my order?
Q: I need an invoice for my company
Q: Can I download my bills?
Q: where are my receipts
@ billing.failed
K: If a payment fails, we retry it after {days} days and email you so you can update your card under
    {menu} > Billing.
K: When a card payment is declined, update the card under {menu} > Billing and we retry the charge
    within {hours} hours.
Q: my payment failed, what now?
Q: Why was my card declined?
Q: the charge didn't go through
Q: what happens if my payment doesn't work?
Q: I got a payment error
@ billing.double
K: If you were charged twice, the duplicate is a temporary hold and disappears within {days}
    business days.
K: Duplicate charges are pending authorisations and are released by your bank within {days} business
    days.
Q: I was charged twice
Q: why do I see two payments for one order?
Q: There is a double charge on my card
Q: you billed me two times, can you fix it?
Q: why did I pay twice
@ billing.date
K: Your subscription is billed on the same day each month as the day you signed up.
K: We charge your card on the {nth} of every month for the coming month.
Q: when will I be charged?
Q: What day of the month do you bill me?
Q: When is my next payment taken?
Q: when does the billing happen
Q: what date is my card charged
@ billing.currency
K: Prices are shown and charged in your local currency; your bank may add a conversion fee.
K: We charge in {currency}, so card issuers may add a foreign transaction fee.
Q: what currency do you charge in?
Q: Will I pay in my own currency?
Q: why is there a conversion fee on my statement?
Q: Can I pay in euros?
@ sub.cancel
K: You can cancel your subscription at any time under {menu} > Subscription > Cancel; you keep
    access until the end of the billing period.
K: To cancel your {plan} plan, open {menu} > Subscription and select "Cancel plan".
X: No further payments are taken after you cancel.
Q: how do I cancel my subscription?
Q: I want to stop my membership
Q: How can I end my {plan} plan?
Q: Can I cancel anytime?
Q: please help me unsubscribe from the paid plan
Q: how to stop being charged every month
@ sub.pause
K: You can pause your subscription for up to {months} months from {menu} > Subscription > Pause.
K: Subscriptions can be paused for up to {months} months; billing resumes automatically afterwards.
Q: can I pause my subscription?
Q: I'm travelling, can I put my plan on hold?
Q: Is it possible to freeze my membership for a while?
Q: How do I take a break from my subscription?
@ sub.upgrade
K: To upgrade to {plan2}, go to {menu} > Subscription > Change plan; you pay only the difference for
    the current month.
K: Plan upgrades take effect immediately and are charged pro rata for the rest of the month.
Q: how do I upgrade my plan?
Q: Can I switch to {plan2}?
Q: I want a bigger plan
Q: How do I move to a higher tier?
Q: how much does it cost to upgrade in the middle of the month?
@ sub.trial
K: The free trial lasts {days} days and you will not be charged if you cancel before it ends.
K: New members get a {days}-day free trial; we send a reminder by email before it ends.
Q: how long is the free trial?
Q: Will I be charged during the trial?
Q: Is there a free trial?
Q: Can I try {co} for free?
Q: when does my trial end?
@ sub.plans
K: The {plan} plan costs {amount} per month and the {plan2} plan costs {amount2} per month.
K: {plan} is {amount} a month; {plan2} adds extra features for {amount2} a month.
Q: how much does it cost?
Q: What are your prices?
Q: What's the price of the {plan} plan?
Q: how much is a monthly subscription?
Q: what plans do you have
@ sub.family
K: The family plan covers up to {n} people in one household for {amount} per month.
K: Up to {n} household members can share one family plan.
Q: can I share my account with my family?
Q: Is there a family plan?
Q: How many people can use one subscription?
Q: can my kids use my membership too?
@ sub.student
K: Students get {pct}% off any plan with a valid student email address.
K: We offer a {pct}% student discount; verify your student email under {menu} > Subscription.
Q: do you have a student discount?
Q: I'm a student, is there a cheaper price?
Q: Are there discounts for students?
Q: how do I get the student price
@ device.reset
K: To factory reset your {device}, hold the power button for {n} seconds until the light flashes.
K: Hold the reset button on the back of the {device} for {n} seconds to restore factory settings.
X: This erases all settings and paired accounts.
Q: how do I reset my {device}?
Q: My {device} is frozen, how do I restart it from scratch?
Q: how to factory reset the device
Q: Can I restore factory settings?
Q: the {device} isn't responding, how do I wipe it
@ device.pair
K: To pair your {device}, turn on Bluetooth on your phone, open the {co} app and tap "Add device".
K: Pair the {device} from the {co} app: tap "Add device" and keep the {device} within {n} metres.
Q: how do I connect my {device} to my phone?
Q: The {device} won't pair with Bluetooth
Q: how do I set up the {device} with the app?
Q: How can I link my {device}?
Q: pairing instructions please
@ device.warranty
K: All {co} devices have a {months}-month warranty covering manufacturing defects.
K: Our warranty lasts {months} months from the date of purchase and covers defects, not accidental
    damage.
X: Keep your receipt as proof of purchase.
Q: what is the warranty on the {device}?
Q: is my device still under warranty?
Q: How long is the guarantee?
Q: does the warranty cover a broken screen?
Q: My {device} stopped working after a few months, is it covered?
@ device.battery
K: The {device} battery lasts up to {hours} hours and fully charges in about {n} hours.
K: A full charge takes about {n} hours and gives up to {hours} hours of use.
X: Battery life is shorter in cold weather.
Q: how long does the battery last?
Q: How long does it take to charge the {device}?
Q: what's the battery life?
Q: my battery runs out quickly, is that normal?
Q: how many hours of use per charge
@ device.update
K: Firmware updates install automatically overnight when the {device} is charging and connected to
    Wi-Fi.
K: To update the firmware, open the {co} app, select the {device} and tap "Check for updates".
Q: how do I update the firmware?
Q: Is there a software update for my {device}?
Q: How do I get the latest version on my device?
Q: does the {device} update itself?
@ device.wifi
K: The {device} works with 2.4 GHz Wi-Fi networks only; 5 GHz networks are not supported.
K: Connect the {device} to a 2.4 GHz Wi-Fi network, since 5 GHz is not supported.
Q: why won't my {device} connect to wifi?
Q: Does it support 5 GHz Wi-Fi?
Q: the {device} can't find my wireless network
Q: what kind of wifi do I need?
@ store.hours
K: Our customer service team is available {weekday} to Friday from {time} to {time2}.
K: You can reach us by phone at {phone} every day from {time} to {time2}.
Q: what are your opening hours?
Q: When can I call customer service?
Q: what time are you open?
Q: Are you available on weekends?
Q: how can I contact support by phone?
@ store.giftcard
K: Gift cards are valid for {months} months and can be used on any order.
K: Gift cards never expire and can be redeemed at checkout in the "Gift card" field.
X: Gift cards cannot be exchanged for cash.
Q: how do I use a gift card?
Q: Do gift cards expire?
Q: Can I redeem a voucher online?
Q: where do I put my gift card code
Q: can I get cash for my gift card?
@ store.loyalty
K: You earn {n} points for every {amount} spent, and {points} points give you {amount2} off.
K: Loyalty points are added {days} days after delivery and can be spent at checkout.
Q: how do the reward points work?
Q: How do I earn loyalty points?
Q: when do I get my points?
Q: What can I do with my points?
Q: is there a rewards programme
@ store.pricematch
K: If you find the same item cheaper within {days} days of buying it, we refund the difference.
K: We match lower prices from major retailers for {days} days after purchase.
Q: do you price match?
Q: I found it cheaper somewhere else
Q: The price dropped after I bought it, can I get the difference back?
Q: will you match a competitor's price?
@ store.promo
K: Only one promo code can be used per order, and it must be entered before payment.
K: Promo codes are entered in the "Discount code" box at checkout; codes cannot be combined.
Q: how do I use a discount code?
Q: Can I use two coupons at once?
Q: my promo code isn't working
Q: where do I enter a voucher code?
@ privacy.data
K: You can download a copy of your data from {menu} > Privacy > Export data; the file is ready
    within {hours} hours.
K: To get a copy of your personal data, request an export under {menu} > Privacy.
Q: how can I get a copy of my data?
Q: Can I download everything you store about me?
Q: how do I export my personal information?
Q: what data do you keep and can I see it?
@ privacy.marketing
K: To stop marketing emails, click "Unsubscribe" at the bottom of any email or turn them off under
    {menu} > Notifications.
K: Marketing emails can be switched off under {menu} > Notifications.
Q: how do I stop getting promotional emails?
Q: You keep sending me newsletters, how do I stop them?
Q: How can I unsubscribe from your emails?
Q: too much spam from you, how to opt out
@ app.install
K: The {co} app is available for iPhone and Android; search for "{co}" in your app store.
K: Download the {co} app from the App Store or Google Play, then sign in with your account.
Q: is there a mobile app?
Q: where can I download the app?
Q: Do you have an Android app?
Q: Can I use {co} on my phone?
@ app.offline
K: Downloaded content stays available offline for {days} days before the app needs to reconnect.
K: You can use downloads offline for up to {days} days.
Q: can I use the app without internet?
Q: Does it work offline?
Q: how long do downloads last offline?
Q: I'm going on a flight, will my downloads work?
"""
