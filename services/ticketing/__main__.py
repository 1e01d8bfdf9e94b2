from services.ticketing.settings import TicketingSettings
from shared.run import serve

serve("ticketing", TicketingSettings())
