# Two commands do everything on a fresh Linux machine with Python 3.11+:
#   make run    set up, migrate, load the demo trial once, serve the admin and API on 127.0.0.1:$(PORT)
#               as production does (gunicorn, DEBUG off, static files by WhiteNoise), over plain http,
#               with one background worker for exports beside it (stopped when the web server stops)
#   make test   set up and run the whole test suite against PostgreSQL
# make dev serves the same with Django's autoreloading development server and DEBUG on.
PYTHON ?= python3
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
SECRET_KEY_FILE := var/secret_key
# `make run` only: production settings except https (localhost is served over plain http).
RUN_ENV := DJANGO_DEBUG=0 DJANGO_ALLOWED_HOSTS=localhost,127.0.0.1 DJANGO_SECURE_SSL_REDIRECT=0 \
	DJANGO_SECURE_COOKIES=0 DJANGO_SECRET_KEY_FILE=$(SECRET_KEY_FILE)
DEV_ENV := DJANGO_DEBUG=1
# mypy's Django plugin imports the settings; a placeholder DATABASE_URL keeps that from starting the embedded
# server (nothing connects to it).
MYPY := DJANGO_DEBUG=1 DATABASE_URL=postgres://localhost/mypy $(BIN)/mypy

.PHONY: run dev test install lint db-stop backup restore bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet ".[test]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# Generated once, readable by its owner only; settings read it when DJANGO_SECRET_KEY is not set.
$(SECRET_KEY_FILE):
	mkdir -p $(dir $@)
	umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(50))" > $@.tmp && mv $@.tmp $@

# Migrate, load the demo trial once, and (embedded server) create the application's database role.
define prepare
	$(1) $(BIN)/python manage.py migrate --no-input
	$(1) $(BIN)/python manage.py load_demo
	@# On the embedded server the product runs as the application's role, which cannot rewrite the audit trail.
	@if [ -z "$$DATABASE_URL" ]; then $(1) $(BIN)/python manage.py create_app_role cart_app; fi
	@echo ""
	@echo "Admin: http://127.0.0.1:$(PORT)/admin/   (Ctrl-C stops the server; the data stays in var/)"
endef

run: $(STAMP) $(SECRET_KEY_FILE)
	$(call prepare,$(RUN_ENV))
	$(RUN_ENV) $(BIN)/python manage.py collectstatic --no-input --verbosity 0
	if [ -z "$$DATABASE_URL" ]; then export DATABASE_USER=cart_app; fi; \
	$(RUN_ENV) $(BIN)/python manage.py procrastinate worker --queues exports & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	$(RUN_ENV) PORT=$(PORT) $(BIN)/python -m gunicorn -c python:config.gunicorn_conf config.wsgi

dev: $(STAMP)
	$(call prepare,$(DEV_ENV))
	if [ -z "$$DATABASE_URL" ]; then export DATABASE_USER=cart_app; fi; \
	$(DEV_ENV) $(BIN)/python manage.py procrastinate worker --queues exports & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	$(DEV_ENV) $(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(MYPY)
	DJANGO_DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run
	DJANGO_DEBUG=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(MYPY)

db-stop:
	$(BIN)/python -m config.embedded_db stop

# make backup: var/backups/<UTC timestamp>.dump (pg_dump custom format) + .roles.sql (the roles it needs).
backup: $(STAMP)
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py backup_database

# make restore FILE=var/backups/<timestamp>.dump [TARGET=database] [FORCE=1]: roles first, then pg_restore.
restore: $(STAMP)
	@test -n "$(FILE)" || { echo "usage: make restore FILE=var/backups/<timestamp>.dump [TARGET=db] [FORCE=1]"; exit 2; }
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py restore_database "$(FILE)" \
		$(if $(TARGET),--target "$(TARGET)") $(if $(FORCE),--force)

clean:
	rm -rf $(VENV) var
