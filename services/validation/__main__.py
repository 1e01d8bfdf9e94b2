from services.validation.settings import ValidationSettings
from shared.run import serve

serve("validation", ValidationSettings())
