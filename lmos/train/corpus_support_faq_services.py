"""FAQ facts of service businesses for the support task: banks, telecoms, travel, hotels, utilities,
insurance, clinics, gyms, food delivery, car rental, software.

Same format as :data:`lmos.train.corpus_support_faq.FACTS_TEXT`; the wider
the range of businesses, the less the model can answer from memory and the
more it must read the passage.
"""

from __future__ import annotations

FACTS_TEXT_SERVICES = """
@ bank.lostcard
K: If your card is lost or stolen, freeze it straight away in the {co} app under Cards > Freeze card.
K: Report a lost or stolen card by calling {phone}, day or night, and we will block it at once.
X: A replacement card arrives within {days} business days.
Q: I lost my bank card, what should I do?
Q: my card was stolen
Q: How do I block my card?
Q: can't find my debit card anywhere
Q: what happens if someone steals my card?
@ bank.transfer
K: Transfers between {co} accounts are instant; transfers to other banks arrive within {n} business days.
K: Payments to other banks usually arrive the same day if sent before {time2}.
Q: how long does a bank transfer take?
Q: When will my payment reach the other bank?
Q: is sending money instant?
Q: how fast are transfers
@ bank.limit
K: The daily cash withdrawal limit is {amount}; you can change it under Cards > Limits.
K: You can withdraw up to {amount} a day from cash machines.
Q: how much cash can I take out per day?
Q: What is my ATM limit?
Q: can I raise my withdrawal limit?
Q: is there a maximum for cash withdrawals
@ bank.overdraft
K: An arranged overdraft costs {pct}% a year, and there is no fee for the first {amount2} you borrow.
K: You can apply for an overdraft of up to {amount} in the app under Borrowing.
Q: can I get an overdraft?
Q: How much does an overdraft cost?
Q: what's the interest on going overdrawn?
Q: I need to borrow a little on my account
@ telecom.outage
K: If your internet is down, restart your router and check the service status page at {co}.com/status.
K: Check for outages in your area on our status page; most outages are fixed within {hours} hours.
Q: my internet is not working
Q: Is there an outage in my area?
Q: The wifi has been down all morning, what do I do?
Q: why is my broadband offline?
Q: no internet connection since yesterday
@ telecom.roaming
K: Roaming in {n} partner countries is included in your plan; elsewhere it costs {amount2} per day.
K: To use your phone abroad, turn on roaming under {menu} > Mobile; charges are {amount2} per day.
Q: can I use my phone abroad?
Q: How much does roaming cost?
Q: will my plan work when I travel?
Q: do I pay extra for data overseas
@ telecom.unlock
K: We unlock phones for free once they have been on our network for {months} months.
K: To unlock your phone, request an unlock code under {menu} > Device; it arrives within {days} days.
Q: how do I unlock my phone?
Q: Can I use my phone with another network?
Q: is my handset locked to you?
Q: I want to switch carriers and keep my phone
@ travel.baggage
K: Each passenger may check one bag of up to {n}0 kg; extra bags cost {amount} each.
K: Your ticket includes one cabin bag and one checked bag of up to {n}0 kg.
Q: how much luggage can I bring?
Q: What is the baggage allowance?
Q: How much does an extra suitcase cost?
Q: can I take a second bag on the flight?
@ travel.change
K: Flights can be changed up to {hours} hours before departure for a fee of {amount}.
K: You can change your booking online under Manage booking until {hours} hours before the flight.
X: Any difference in fare is added to the fee.
Q: can I change my flight?
Q: How do I move my trip to another date?
Q: what does it cost to rebook?
Q: I need to fly on a different day
@ travel.checkin
K: Online check-in opens {hours} hours before departure and closes {n}0 minutes before.
K: Check in online from {hours} hours before your flight, in the app or on our website.
Q: when can I check in?
Q: How early does online check-in open?
Q: can I check in on my phone?
Q: when does check-in close
@ hotel.checkin
K: Check-in starts at {time2} and check-out is until {time}.
K: Rooms are ready from {time2}; you can leave your luggage with reception before then.
Q: what time is check-in?
Q: When do I have to leave the room?
Q: can I arrive early?
Q: what are the check in and check out times
@ hotel.parking
K: Guest parking costs {amount2} per night and must be booked in advance.
K: We have free parking for guests; spaces cannot be reserved.
Q: is there parking at the hotel?
Q: How much is parking?
Q: Can I park my car there?
Q: do you have a car park
@ utility.meter
K: Submit a meter reading in the {co} app under Energy > Readings, or call {phone}.
K: Send us a meter reading every month so your bill is based on what you really use.
Q: how do I give a meter reading?
Q: Where do I submit my gas reading?
Q: how can I send my electricity meter number
Q: my bill is estimated, how do I fix it?
@ utility.move
K: When you move house, tell us at least {days} days before so we can close your account on the moving day.
K: Moving home? Give us your moving date and final meter readings under {menu} > Moving.
Q: I am moving house, what do I do?
Q: How do I transfer my energy account to a new address?
Q: do I need to tell you when I move?
Q: closing my account because I'm moving
@ insurance.claim
K: To make a claim, fill in the claim form under {menu} > Claims within {days} days of the incident.
K: Claims can be made online or by phone on {phone}; we decide most claims within {days} days.
X: Please keep receipts and photos of any damage.
Q: how do I make a claim?
Q: I had an accident, how do I claim on my insurance?
Q: How long does a claim take?
Q: where do I report damage to my car
@ clinic.appointment
K: You can book, move or cancel an appointment in the {co} app or by calling {phone}.
K: Appointments can be cancelled free of charge up to {hours} hours before;
    later cancellations cost {amount2}.
Q: how do I book an appointment?
Q: Can I cancel my appointment?
Q: I need to reschedule my visit
Q: is there a fee for cancelling late?
@ gym.freeze
K: Memberships can be frozen for up to {months} months a year for {amount2} per month.
K: To freeze your membership, ask at reception or use the {co} app at least {days} days before.
Q: can I freeze my gym membership?
Q: I'm injured, can I pause my membership?
Q: How do I put my membership on hold?
Q: what does it cost to freeze my plan
@ gym.guest
K: Members can bring a guest {n} times a month for free.
K: Guest passes cost {amount2} per visit and can be bought at reception.
Q: can I bring a friend to the gym?
Q: Do you have guest passes?
Q: How much is a day pass for a friend?
Q: can a guest come with me
@ food.late
K: If your delivery is more than {n}0 minutes late, you get a {pct}% voucher for your next order.
K: You can follow your rider live in the app; if the order is very late, contact us in the chat.
Q: my food is late
Q: Where is my delivery? It's been an hour
Q: the order still hasn't arrived
Q: do I get anything back if my food is late?
@ food.allergy
K: Allergen information is listed on every dish page; tell the restaurant about allergies in the order note.
K: Each menu item shows its allergens, and you can add allergy notes at checkout.
Q: does this dish contain nuts?
Q: How do I tell the restaurant about my allergy?
Q: where can I see allergens?
Q: I'm allergic to gluten, what can I do?
@ car.deposit
K: We hold a deposit of {amount} on your card when you pick up the car, released within {days} days of return.
K: A security deposit of {amount} is blocked on your credit card for the rental period.
Q: how much is the deposit?
Q: When do I get my deposit back?
Q: Do you block money on my card for a rental?
Q: is there a security deposit for the car
@ car.fuel
K: Cars are given with a full tank and must be returned full, or we charge a refuelling fee of {amount2}.
K: Return the car with the same fuel level as at pick-up to avoid a {amount2} fee.
Q: do I need to fill up the tank before returning?
Q: What is your fuel policy?
Q: what if I return the car with less fuel?
@ saas.seats
K: Admins can add or remove seats under {menu} > Team; each seat costs {amount2} per month.
K: You can invite new team members under {menu} > Team, and billing updates at the next invoice.
Q: how do I add users to our account?
Q: How much is an extra seat?
Q: Can I invite my colleagues?
Q: how do I remove a team member
@ saas.export
K: You can export all your projects as CSV or JSON under {menu} > Data > Export.
K: Exports of your data are available under {menu} > Data and are emailed within {hours} hours.
Q: how do I export my projects?
Q: Can I download my data as a spreadsheet?
Q: Is there a way to back up everything?
Q: I want to move my data to another tool
"""
