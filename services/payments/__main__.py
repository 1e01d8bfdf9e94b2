from services.payments.settings import PaymentsSettings
from shared.run import serve

serve("payments", PaymentsSettings())
